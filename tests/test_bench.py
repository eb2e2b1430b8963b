"""The benchmark runner (bench/): result structure, headline ratios and the Markdown report.

Cheap on purpose: one test feeds the report hand-made figures (no timing), the other runs the
runner on a 4-frame capture with two workloads and no sweep (about 10 s on one CPU core).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

bench_runner = pytest.importorskip("bench.runner")

from bench import report  # noqa: E402
from bench.common import Budget, Context  # noqa: E402

TOP_KEYS = ("end_to_end_s", "triangulation_speedup_vs_aniposelib", "triangulation_speedup_vs_torch_naive", "triangulate_ransac_ms",
            "dedup_oks_ms", "collision_fwd_bwd_ms", "headline", "goals", "environment", "workloads", "mode",
            "end_to_end_warm_s", "end_to_end_warm_files_s", "stage_s", "run_many_per_hour", "run_many_gpu_busy", "accuracy")


def _system(ms: float, device: str = "cuda", **kw) -> dict:
    return {"available": True, "device": device, "median_ms": ms, "p20_ms": ms, "p80_ms": ms, "repeats": 5, **kw}


def _fake_result() -> dict:
    """A GPU-shaped result with round numbers (what the lead's H100 run produces, figures made up)."""
    env = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "timestamp": "2026-11-24T00:00:00", "command": "python -m bench --out /x",
           "python": "3.12.3", "torch": "2.11.0+cu130", "cuda": "13.0", "versions": {"triton": "3.6.0"}, "cpu": "x86_64", "cpu_count": 16,
           "torch_threads": 16, "gpu_memory_gib": 79.2, "git": {"commit": None, "dirty": None}}
    tri = {
        "workload": {"frames": 600, "people": 2, "joints": 17, "cameras": 20, "points": 20400, "pairs": 190, "lens": "pinhole",
                     "params": {"conf_thr": 0.5, "err_thr": 0.01, "min_views": 2, "refine_steps": 3}, "inlier_threshold_px": 36.0,
                     "observations_over_conf_thr": 0.6},
        "systems": {
            "torch_naive": _system(54.0, mpjpe_mm=2.40, valid_frac=1.0, mpjpe_mm_on_anipose_sample=2.0),
            "h4d_numba": _system(30.0, device="cpu", mpjpe_mm=2.40, valid_frac=1.0, mpjpe_mm_on_anipose_sample=2.0),
            "h4d_triton": _system(0.25, mpjpe_mm=2.40, valid_frac=1.0, mpjpe_mm_on_anipose_sample=2.0, valid_frac_on_anipose_sample=1.0),
            "h4d_cupy": _system(0.20, mpjpe_mm=2.40, valid_frac=1.0, mpjpe_mm_on_anipose_sample=2.0, valid_frac_on_anipose_sample=1.0),
            "numpy_naive": {"available": False, "reason": "skipped for the test"},
            "aniposelib": _system(2.0e6, device="cpu", extrapolated=True, lower_bound=True, measured_items=32, total_items=20400,
                                  mpjpe_mm=9.0, valid_frac=1.0, accuracy_on_points=30, capped_points=2, cap_s=5.0, threshold_px=36.0,
                                  per_point_ms={"mean": 98.0, "median": 10.0, "max": 5000.0}, version="0.8.0", stubbed_imports=[],
                                  extrapolation="measured on 32 random points", per_frame_ms=3332.0),
        },
        "best": "h4d_cupy",
    }
    e2e = {"available": True, "workload": {"frames": 600, "cameras": 20, "people": 2}, "wall_s": 25.0, "total_s": 21.0, "cold_wall_s": 40.0,
           "cold_total_s": 30.0, "warm_runs": 2, "includes_fit": True, "keypoints_s": 6.0, "command": "h4d run SEQ --out OUT",
           "stages": [{"name": "track", "seconds": 5.0, "stats": {"valid_fraction": 1.0}}, {"name": "fit", "seconds": 16.0}],
           "accuracy": {"mpjpe_mm": 3.1}}
    sweep = {"kind": "full", "definition": {"center": {"frames": 600, "cameras": 20, "people": 2}}, "skipped": [],
             "rows": [{"workload": "triangulation", "axis": "frames", "frames": f, "cameras": 20, "people": 2, "items": f * 34,
                       "item": "points", "system": "h4d_cupy", "available": True, "median_ms": 0.2 * f / 600} for f in (60, 600, 6000)]}
    return {"schema": "h4d_fast-bench/1", "environment": env,
            "mode": {"quick": False, "full": False, "budget_s": 400, "repeats": 20, "seed": 0, "frames": None, "sweep": True,
                     "workloads": ["triangulation", "end_to_end", "dedup"]},
            "workloads": {"triangulation": tri, "end_to_end": e2e, "dedup": {"absent": "skipped: the time budget ran out", "available": False}},
            "sweep": sweep}


def test_report_headline_ratios_goals_and_markdown(tmp_path):
    R = _fake_result()
    ctx = Context(device=__import__("torch").device("cpu"), budget=Budget(100))
    paths = {"json": tmp_path / "r.json", "md": tmp_path / "r.md"}
    bench_runner.finalize(R, ctx, paths)
    J = json.loads(paths["json"].read_text())
    for k in TOP_KEYS:
        assert k in J, k
    # the acceptance figures are exactly the ratios of the raw figures beside them
    assert J["end_to_end_s"] == pytest.approx(25.0)
    assert J["triangulate_ransac_ms"] == pytest.approx(0.20)
    assert J["triangulation_speedup_vs_aniposelib"] == pytest.approx(2.0e6 / 0.20)
    assert J["triangulation_speedup_vs_torch_naive"] == pytest.approx(54.0 / 0.20)
    h = J["headline"]["triangulation_speedup_vs_aniposelib"]
    assert h["peer_ms"] == 2.0e6 and h["kernel_ms"] == 0.20 and h["kernel"] == "h4d_cupy" and h["lower_bound"] is True
    goals = {g["id"]: g for g in J["goals"]}
    assert goals["end_to_end"]["met"] is True
    assert goals["triangulation_vs_aniposelib"]["met"] is True
    assert goals["triangulation_vs_torch_naive"]["met"] is True  # 270x at equal MPJPE
    assert goals["triangulation_ms"]["met"] is True and goals["dedup_ms"]["met"] is None  # dedup did not run
    md = paths["md"].read_text()
    assert "NVIDIA H100 80GB HBM3" in md and "python -m bench --out /x" in md and "triton 3.6.0" in md
    assert "## Side by side" in md and "| workload | size | h4d_fast |" in md
    assert "not available: skipped for the test" in md  # a missing peer is listed with its reason
    assert "not available: skipped: the time budget ran out" in md  # so is a skipped workload
    assert "triangulation vs frames" in md
    lines = report.acceptance_lines(J)
    assert any(line.startswith("triangulation_speedup_vs_aniposelib = ") and "10,000,000.0x" in line for line in lines)


def test_runner_tiny_cpu_run(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    argv = ["--device", "cpu", "--quick", "--frames", "4", "--only", "tri,oks", "--no-sweep", "--repeats", "1", "--anipose-points", "2",
            "--anipose-cap-s", "0.5", "--anipose-total-s", "1", "--out", str(tmp_path), "--tag", "test", "--quiet"]
    assert bench_runner.main(argv) == 0
    js = list(tmp_path.glob("*-cpu-quick-test.json"))
    assert len(js) == 1
    J = json.loads(js[0].read_text())
    md = js[0].with_suffix(".md").read_text()
    for k in TOP_KEYS:
        assert k in J, k
    env = J["environment"]
    assert env["device"] == "cpu" and env["device_name"] and env["command"].startswith("python -m bench --device cpu")
    assert "torch" in env and "numpy" in env["versions"]
    S = J["workloads"]["triangulation"]["systems"]
    assert set(S) >= {"aniposelib", "numpy_naive", "torch_naive", "h4d_numba", "h4d_triton", "h4d_cupy"}
    for name in ("h4d_triton", "h4d_cupy"):  # GPU backends: listed as absent, with the reason
        assert S[name]["available"] is False and S[name]["reason"]
    assert S["h4d_numba"]["available"] and S["h4d_numba"]["mpjpe_mm"] is not None
    assert J["triangulate_ransac_ms"] == pytest.approx(S["h4d_numba"]["median_ms"])
    assert J["triangulation_speedup_vs_torch_naive"] == pytest.approx(S["torch_naive"]["median_ms"] / S["h4d_numba"]["median_ms"])
    if S["aniposelib"]["available"]:
        assert S["aniposelib"]["extrapolated"] is True and "extrapolated" in S["aniposelib"]["extrapolation"]
    else:
        assert S["aniposelib"]["reason"]
    D = J["workloads"]["dedup"]["systems"]
    assert set(D) >= {"cocoapi", "torch_naive", "h4d_numba", "h4d_triton", "h4d_cupy"}
    assert J["end_to_end_s"] is None and "--only" in J["headline"]["end_to_end_s"]["reason"]
    assert "## Side by side" in md and "h4d_numba" in md and "absent: `h4d_triton`" in md


def test_image_workloads_headline_and_goals(tmp_path):
    """`detect_crops_per_s` and `images_to_meshes_s` at top level, from the image workloads' raw figures."""
    R = _fake_result()
    R["mode"]["workloads"] += ["detect", "images_to_meshes"]
    R["workloads"]["detect"] = {
        "available": True, "workload": {"frames": 100, "cameras": 20}, "crops_per_s": 2500.0, "images_per_s": 900.0,
        "models": {"default": {"available": True, "name": "blazepose-full", "model_crops_per_s": 2500.0, "decoder": "cpu",
                               "detector_images_per_s": 3000.0, "pass": {"images_per_s": 900.0, "crops_per_s": 910.0}}}}
    R["workloads"]["images_to_meshes"] = {"available": True, "workload": {"frames": 600, "cameras": 20}, "wall_s": 75.0, "warm": True,
                                          "cold_wall_s": 90.0, "stages": {"detect": 30.0}, "frames_with_3d": 1.0, "command": "h4d run SEQ"}
    ctx = Context(device=__import__("torch").device("cpu"), budget=Budget(100))
    paths = {"json": tmp_path / "r.json", "md": tmp_path / "r.md"}
    bench_runner.finalize(R, ctx, paths)
    J = json.loads(paths["json"].read_text())
    assert J["detect_crops_per_s"] == pytest.approx(2500.0) and J["images_to_meshes_s"] == pytest.approx(75.0)
    assert J["headline"]["detect_crops_per_s"]["images_per_s_decode_included"] == pytest.approx(900.0)
    goals = {g["id"]: g for g in J["goals"]}
    assert goals["detect_crops_per_s"]["met"] is True and goals["images_to_meshes"]["met"] is False
    md = paths["md"].read_text()
    assert "2,500 crops/s" in md and "75.0 s" in md
    del R["workloads"]["images_to_meshes"]
    bench_runner.finalize(R, ctx, paths)
    J = json.loads(paths["json"].read_text())
    assert J["images_to_meshes_s"] is None and J["headline"]["images_to_meshes_s"]["reason"] == "not measured"


def test_issue13_keys_goals_and_markdown(tmp_path):
    """The warm path, stage budgets, run-many throughput and accuracy-vs-baseline figures reach the
    top level and the goals (figures made up: two stages over budget, one accuracy figure worse)."""
    from bench.baseline import BASELINE, compare
    from bench.end_to_end_warm import STAGE_BUDGETS_S

    R = _fake_result()
    stage = {"load": 0.25, "filter": 0.04, "track": 0.9, "refine": 0.1, "fit": 1.4, "export": 0.7}
    acc = {"mpjpe_mm": BASELINE["mpjpe_mm"], "pve_mm": BASELINE["pve_mm"] * 1.2, "identity_swaps": 0,
           "penetration_after_cm3": BASELINE["penetration_after_cm3"] * 0.9}
    R["workloads"]["end_to_end_warm"] = {"available": True, "command": "python -m bench.warm_run SEQ W", "end_to_end_warm_s": 2.9,
                                         "end_to_end_warm_files_s": 3.4, "stage_s": stage, "stage_budgets_s": STAGE_BUDGETS_S,
                                         "first_run_s": 9.0, "sequential_device": "same", "runs": [{}, {}, {}], "accuracy": acc,
                                         "accuracy_vs_baseline": compare(acc)}
    R["workloads"]["run_many"] = {"available": True, "command": "h4d run-many R --devices 0*4", "workload": {"workers": 4, "frames": 600,
                                  "cameras": 20}, "captures": 30, "done": 30, "run_many_per_hour": 2100.0, "per_hour_wall": 1500.0,
                                  "wall_s": 72.0, "run_many_gpu_busy": 0.8, "gpu_busy_wall": 0.7}
    R["mode"]["workloads"] += ["end_to_end_warm", "run_many"]
    ctx = Context(device=__import__("torch").device("cpu"), budget=Budget(100))
    paths = {"json": tmp_path / "r.json", "md": tmp_path / "r.md"}
    bench_runner.finalize(R, ctx, paths)
    J = json.loads(paths["json"].read_text())
    assert J["end_to_end_warm_s"] == 2.9 and J["end_to_end_warm_files_s"] == 3.4 and J["stage_s"] == stage
    assert J["run_many_per_hour"] == 2100.0 and J["run_many_gpu_busy"] == 0.8
    assert J["accuracy"]["pve_mm"] == pytest.approx(BASELINE["pve_mm"] * 1.2)
    goals = {g["id"]: g for g in J["goals"]}
    assert goals["end_to_end_warm"]["met"] is True and goals["end_to_end_fresh"]["met"] is False  # 25 s > 8 s
    met = {k: goals[f"stage_{k}"]["met"] for k in stage}
    assert met == {"load": True, "filter": True, "track": False, "refine": True, "fit": True, "export": False}
    assert goals["run_many_per_hour"]["met"] is True and goals["run_many_gpu_busy"]["met"] is False
    assert goals["accuracy_mpjpe_mm"]["met"] is True and goals["accuracy_pve_mm"]["met"] is False
    assert goals["accuracy_identity_swaps"]["met"] is True and goals["accuracy_penetration_after_cm3"]["met"] is True
    md = paths["md"].read_text()
    assert "## Warm path" in md and "## Run-many throughput" in md and "2100 captures/hour" in md


def test_baseline_compare_limits():
    from bench.baseline import BASELINE, TOLERANCE, compare

    c = compare({k: v * (1 + TOLERANCE / 2) for k, v in BASELINE.items()})
    assert c["all_ok"] is True
    c = compare({**BASELINE, "identity_swaps": 1})  # 0 swaps must stay 0
    assert c["identity_swaps"]["ok"] is False and c["all_ok"] is False
    assert compare({})["all_ok"] is False  # nothing measured is not a pass


def test_paper_sequence_kept_between_runs(tmp_path, monkeypatch):
    """With $H4D_BENCH_SEQUENCE_CACHE the bench capture is written once and reused by a later run
    (a new Context, as a new process has), and written again when the generator's code changes."""
    import torch

    from bench import workloads

    calls = []

    def fake_write(ctx, folder):
        calls.append(Path(folder))
        Path(folder).mkdir(parents=True)
        (Path(folder) / "sequence.json").write_text("{}")
        return {"generator": "test", "seed": ctx.seed}

    monkeypatch.setattr(workloads, "write_paper_sequence", fake_write)
    monkeypatch.setenv(workloads.SEQUENCE_CACHE_ENV, str(tmp_path / "kept"))

    def run():
        ctx = Context(device=torch.device("cpu"), quick=True, budget=Budget(1e9))
        ctx.verbose = False
        return workloads.paper_sequence(ctx)

    folder, info, secs = run()
    assert len(calls) == 1 and folder.parent == tmp_path / "kept" and "cached" not in info
    assert folder.name.endswith(workloads.generator_key()) and (folder / "bench_info.json").is_file()
    folder2, info2, secs2 = run()
    assert len(calls) == 1 and folder2 == folder and info2["cached"] == str(folder) and secs2 == 0.0
    # a half-written folder (no bench_info.json) is written again
    (folder / "bench_info.json").unlink()
    run()
    assert len(calls) == 2
    # another generator: another folder
    monkeypatch.setattr(workloads, "generator_key", lambda: "0123456789abcdef")
    folder3, _, _ = run()
    assert len(calls) == 3 and folder3 != folder and folder3.name.endswith("0123456789abcdef")
