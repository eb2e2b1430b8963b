"""Stage cache keys cover the code: editing a stage's module changes its key and the keys after it,
not those before; every module of pipeline/ops/body/detect is in some stage's fingerprint; each
stage's list holds the modules it imports; run-many's marker hash follows the code."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from h4d_fast.config import Config
from h4d_fast.pipeline import code_keys, many
from h4d_fast.pipeline.driver import StageCache, run_keypoints
from h4d_fast.synth import make_capture

CHAIN = ("filter", "track", "refine", "fit")
# the stages whose keys a stage's key includes (its upstream), for the import check
UPSTREAM = {"filter": (), "track": ("filter",), "refine": ("filter", "track"), "fit": ("filter", "track", "refine"),
            "export": ("filter", "track", "refine", "fit"), "detect": ("filter", "track", "refine")}
COVERED_PACKAGES = ("pipeline", "ops", "body", "detect")


@pytest.fixture
def edit(monkeypatch):
    """``edit(rel)``: from now on the package's ``rel`` reads with one more line (as after an upgrade)."""
    real = code_keys._read_bytes
    edited: set[str] = set()

    def read(rel: str) -> bytes:
        data = real(rel)
        return data + b"\n# edited\n" if rel in edited else data

    monkeypatch.setattr(code_keys, "_read_bytes", read)

    def do(rel: str) -> None:
        assert rel in code_keys.source_digests(), rel
        edited.add(rel)
        code_keys.source_digests.cache_clear()

    yield do
    code_keys.source_digests.cache_clear()


def _chain_keys(cache: StageCache) -> dict[str, str]:
    keys, up = {}, "inputs"
    for name in CHAIN:
        up = keys[name] = cache.key(name, up, {"cfg": name})
    return keys


@pytest.mark.parametrize("rel, first_changed", [
    ("pipeline/filter.py", "filter"),
    ("ops/_oks_numba.py", "filter"),
    ("pipeline/triangulate.py", "track"),
    ("ops/_assign_torch.py", "track"),
    ("pipeline/refine.py", "track"),  # tracks.py uses refine's limb lengths
    ("pipeline/fit_gn.py", "fit"),
    ("body/jacobian.py", "fit"),
    ("csrc/collision.cu", "fit"),
    ("config.py", "filter"),
])
def test_edit_changes_stage_and_downstream_keys_only(tmp_path, edit, rel, first_changed):
    cache = StageCache(tmp_path)
    before = _chain_keys(cache)
    edit(rel)
    after = _chain_keys(cache)
    i = CHAIN.index(first_changed)
    for name in CHAIN[:i]:
        assert after[name] == before[name], (rel, name)
    for name in CHAIN[i:]:
        assert after[name] != before[name], (rel, name)


def test_edit_of_export_or_detect_code_leaves_the_keypoint_stages(tmp_path, edit):
    cache = StageCache(tmp_path)
    before = _chain_keys(cache)
    det = code_keys.stage_fingerprint("detect_pass1")
    exp = code_keys.stage_fingerprint("export")
    edit("pipeline/export.py")
    edit("detect/passes.py")
    assert _chain_keys(cache) == before
    assert code_keys.stage_fingerprint("detect_pass1") != det and code_keys.stage_fingerprint("export") != exp


def test_rerun_after_code_edit_recomputes_from_that_stage(tmp_path, edit):
    cap, _, _ = make_capture(num_frames=6, num_cameras=4, seed=1)
    cfg = Config()
    cfg.run.progress = False
    first = run_keypoints(cap, tmp_path, cfg)
    assert not any(s.cached for s in first.stages)
    assert all(s.cached for s in run_keypoints(cap, tmp_path, cfg).stages)
    edit("pipeline/identity.py")
    res = run_keypoints(cap, tmp_path, cfg)
    assert {s.name: s.cached for s in res.stages} == {"filter": True, "track": False, "refine": False}
    assert res.extra["keys"]["filter"] == first.extra["keys"]["filter"]
    assert res.extra["keys"]["refine"] != first.extra["keys"]["refine"]


def test_run_many_marker_hash_follows_the_code(edit):
    cfg = Config()
    h = many.config_hash(cfg)
    assert many.config_hash(cfg) == h
    edit("pipeline/export.py")
    assert many.config_hash(cfg) != h


def test_the_driver_stages_are_fingerprinted():
    """The driver's stage list runs the paper's stages in order; every cached one has a code
    fingerprint (its key covers its code) and every fingerprint belongs to one of them."""
    from h4d_fast.pipeline import driver

    names = [s.name for s in driver.STAGES]
    assert names == ["detect", "load", "filter", "track", "refine", "export", "fit", "export_smpl"]
    assert [s.name for s in driver.STAGES if s.cached] == ["filter", "track", "refine", "fit"]
    for s in driver.STAGES:
        if s.cached:
            assert code_keys.stage_files(s.name)
    assert set(code_keys.STAGES) <= set(names)
    # top to bottom: a stage reads what run_sequence gives or an earlier stage made
    fields = {f.name for f in dataclasses.fields(driver.RunState)}
    made = {"seq", "capture", "input_key"}
    for s in driver.STAGES:
        assert set(s.reads) <= made, (s.name, set(s.reads) - made)
        assert set(s.makes) <= fields, s.name
        made |= set(s.makes)


def test_unlisted_stage_has_no_key(tmp_path):
    with pytest.raises(KeyError, match="code_keys.py"):
        StageCache(tmp_path).key("a_new_stage", "", {})


def test_fingerprint_reads_the_package_sources():
    files = code_keys.source_digests()
    pkg = Path(code_keys.__file__).resolve().parents[1]
    on_disk = {p.relative_to(pkg).as_posix() for ext in ("py", "cu", "cuh") for p in pkg.rglob(f"*.{ext}")
               if "__pycache__" not in p.parts}
    assert set(files) == on_disk
    assert {"csrc/collision.cu", "csrc/common.cuh", "pipeline/triangulate.py"} <= set(files)


def test_every_module_is_in_a_fingerprint_list():
    """A new module under pipeline/ops/body/detect must be listed (a stage, COMMON or NOT_RESULTS)."""
    listed = set(code_keys.expand(code_keys.COMMON + code_keys.NOT_RESULTS + sum(code_keys.STAGES.values(), ())))
    modules = [rel for rel in code_keys.source_digests() if rel.split("/")[0] in COVERED_PACKAGES or rel.startswith("csrc/")]
    missing = sorted(rel for rel in modules if rel not in listed)
    assert not missing, f"not in any stage's fingerprint (h4d_fast/pipeline/code_keys.py): {missing}"


def test_every_pattern_matches_a_file():
    """A renamed module cannot leave a dead pattern behind (and its new name unlisted)."""
    pats = set(code_keys.COMMON + code_keys.NOT_RESULTS + sum(code_keys.STAGES.values(), ()))
    dead = sorted(p for p in pats if not code_keys.expand((p,)))
    assert not dead


# ----------------------------------------------------------------------------- imports of the stages
def _module_file(parts: list[str], files: dict) -> str | None:
    rel = "/".join(parts)
    if rel + ".py" in files:
        return rel + ".py"
    if rel + "/__init__.py" in files:
        return rel + "/__init__.py"
    return None


def _resolve(base: list[str], name: str, files: dict, depth: int = 0) -> str | None:
    """The file that defines ``name`` imported from package-relative module ``base`` (re-exports of a
    package's ``__init__`` followed to their module)."""
    sub = _module_file(base + [name], files)
    if sub is not None:
        return sub
    mod = _module_file(base, files)
    if mod is None or not mod.endswith("__init__.py") or depth > 3:
        return mod
    for node in ast.walk(ast.parse(code_keys._read_bytes(mod))):
        if isinstance(node, ast.ImportFrom) and node.level and any((a.asname or a.name) == name for a in node.names):
            return _resolve(_base(mod, node), name, files, depth + 1)
    return mod


def _base(rel: str, node: ast.ImportFrom) -> list[str]:
    pkg = rel.split("/")[:-1]
    pkg = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
    return pkg + (node.module.split(".") if node.module else [])


def _imports(rel: str, files: dict) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(code_keys._read_bytes(rel))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("h4d_fast."):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = _base(rel, node)
            for a in node.names:
                f = _resolve(base, a.name, files)
                if f is not None:
                    out.add(f)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("h4d_fast."):
                    f = _module_file(a.name.split(".")[1:], files)
                    if f is not None:
                        out.add(f)
    return out


@pytest.mark.parametrize("stage", sorted(code_keys.STAGES))
def test_stage_list_holds_what_its_modules_import(stage):
    files = code_keys.source_digests()
    common = set(code_keys.expand(code_keys.COMMON))
    allowed = set(code_keys.stage_files(stage)).union(*(code_keys.stage_files(s) for s in UPSTREAM[stage]))
    todo = [f for f in code_keys.expand(code_keys.STAGES[stage]) if f.endswith(".py")]
    seen, outside = set(todo), set()
    while todo:
        rel = todo.pop()
        for dep in _imports(rel, files):
            if dep not in allowed:
                outside.add(f"{dep} (imported by {rel})")
            if dep not in seen and dep not in common:  # COMMON's own imports are the driver's, chained by the keys
                seen.add(dep)
                todo.append(dep)
    assert not outside, f"stage {stage!r} imports modules outside its fingerprint: {sorted(outside)}"


def test_run_many_redoes_a_finished_capture_after_a_code_change(tmp_path, edit):
    job = many.Job(0, "s", tmp_path / "seq", tmp_path / "out" / "s", tmp_path / "out" / many.PARTIAL_DIR / "s")
    (job.out / many.CACHE_DIR).mkdir(parents=True)
    cfg_hash = many.config_hash(Config())
    (job.out / many.CACHE_DIR / many.MARKER).write_text(json.dumps({"config_hash": cfg_hash, "input_fingerprint": "f"}))
    assert many.skip_reason(job, many.config_hash(Config()), "f") == (True, "finished earlier")
    edit("ops/_triangulate_torch.py")
    assert many.skip_reason(job, many.config_hash(Config()), "f") == (False, "configuration or h4d_fast code changed")
