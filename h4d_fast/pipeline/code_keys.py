"""Code fingerprints of the stages: which source files compute each stage, and a hash of their text.

A stage's cache key (:class:`~h4d_fast.pipeline.driver.StageCache`) and run-many's finished
markers include the fingerprint of the code that computed it, so a rerun after an upgrade (or an
edit) that changes a stage recomputes that stage and those after it (their keys chain) instead of
reloading stale results. The fingerprint is a hash of the text of the files listed below (globs
relative to the ``h4d_fast`` package), read through :mod:`importlib.resources` so an installed
wheel is fingerprinted as a checkout is; read once per process.

Every module under ``pipeline``, ``ops``, ``body`` and ``detect`` is listed by some stage, by
:data:`COMMON` or by :data:`NOT_RESULTS` (tests/test_code_keys.py fails otherwise), and each
stage's list holds what its modules import (the same test follows the imports).
"""

from __future__ import annotations

import fnmatch
import hashlib
from functools import lru_cache
from importlib import resources

PACKAGE = "h4d_fast"

# part of every stage's fingerprint: the data model, configuration, input readers, dispatch, the driver
COMMON: tuple[str, ...] = (
    "__init__.py", "config.py", "constants.py", "data.py", "camera.py", "errors.py", "progress.py",
    "io/*.py", "ops/__init__.py", "ops/_backend.py", "ops/_cuda_source.py", "csrc/common.cuh", "rotations.py", "align.py",
    *("ops/boxes.py", "ops/_boxes_*.py"),
    "pipeline/__init__.py", "pipeline/driver.py", "pipeline/driver_parts.py", "pipeline/keypoint_stages.py", "pipeline/run.py",
    "pipeline/_threads.py", "pipeline/code_keys.py",
)

_OKS = ("ops/oks.py", "ops/_oks_*.py", "csrc/oks.cu")
_BOXES = ("ops/boxes.py", "ops/_boxes_*.py")
# penetration and contact of meshes (the fit reports penetration, the export writes contact labels)
_MESH_MEASURES = ("ops/penetration.py", "ops/contact.py", "ops/mesh_geometry.py", "ops/_mesh_numba.py", "ops/_collision_numba.py",
                  "ops/_collision_torch.py", "ops/_contact_*.py")

# stage -> the files that compute it (beside COMMON). The keys of the stages chain (filter -> track
# -> refine -> fit; detect's pass 2 runs filter/track/refine), so a stage's list need not repeat its
# upstream stages' files.
STAGES: dict[str, tuple[str, ...]] = {
    "detect": ("pipeline/detect.py", "detect/*.py", "detect/models/*.py", *_OKS, "ops/triangulate.py",
               "ops/_triangulate_*.py", "csrc/triangulate.cu", "body/default_model.py", "body/_anny_convert.py",
               "body/_anny_assets.py"),
    "filter": ("pipeline/filter.py", *_OKS),
    "track": ("pipeline/triangulate.py", "pipeline/identity.py", "pipeline/tracks.py", "pipeline/_track_numba.py",
              "pipeline/refine.py", "pipeline/lbfgs.py", *_OKS, "ops/triangulate.py", "ops/_triangulate_*.py", "csrc/triangulate.cu",
              "ops/assign.py", "ops/_assign_*.py", "csrc/assign.cu"),
    "refine": ("pipeline/refine.py", "pipeline/lbfgs.py"),
    "fit": ("pipeline/fit.py", "pipeline/fit_*.py", "pipeline/lbfgs.py", "body/*.py", "ops/collision.py",
            "ops/_collision_*.py", "csrc/collision.cu", *_MESH_MEASURES),
    "export": ("pipeline/export.py", *_BOXES, "body/*.py", *_MESH_MEASURES),
}

# cache names of the driver that belong to a stage of STAGES under another name
ALIASES: dict[str, str] = {"detect_pass1": "detect"}

# modules of pipeline/ops/body/detect that compute no stored result (orchestration, warm-up)
NOT_RESULTS: tuple[str, ...] = (
    "pipeline/many.py", "pipeline/many_jobs.py", "pipeline/many_exec.py", "pipeline/warmup.py",
)


def _read_bytes(rel: str) -> bytes:
    node = resources.files(PACKAGE)
    for part in rel.split("/"):
        node = node / part
    return node.read_bytes()


def _list_files() -> list[str]:
    """Every file of the package (relative paths), ``__pycache__`` left out."""
    out: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.name == "__pycache__":
                continue
            rel = prefix + child.name
            if child.is_dir():
                walk(child, rel + "/")
            elif child.name.endswith((".py", ".cu", ".cuh")):
                out.append(rel)

    walk(resources.files(PACKAGE), "")
    return sorted(out)


@lru_cache(maxsize=None)
def source_digests() -> dict[str, str]:
    """``relative path -> sha256`` of the package's source files (.py, .cu, .cuh); once per process."""
    return {rel: hashlib.sha256(_read_bytes(rel)).hexdigest() for rel in _list_files()}


def expand(patterns: tuple[str, ...] | list[str]) -> list[str]:
    """The package files that match ``patterns`` (``*`` does not cross ``/``)."""
    files = source_digests()
    hit = set()
    for pat in patterns:
        for rel in files:
            if fnmatch.fnmatchcase(rel, pat) and rel.count("/") == pat.count("/"):
                hit.add(rel)
    return sorted(hit)


def stage_files(stage: str) -> list[str]:
    """The files whose text a stage's fingerprint covers (COMMON included).

    Raises:
        KeyError: a stage that :data:`STAGES` does not list (a new stage needs its files listed).
    """
    name = ALIASES.get(stage, stage)
    if name not in STAGES:
        raise KeyError(f"stage {stage!r} has no code fingerprint: list its modules in h4d_fast/pipeline/code_keys.py STAGES")
    return expand(COMMON + STAGES[name])


def stage_fingerprint(stage: str) -> str:
    """Hash of the text of the files that compute ``stage`` (see :func:`stage_files`)."""
    digests = source_digests()
    h = hashlib.sha256()
    for rel in stage_files(stage):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest()[:16]


def code_fingerprint() -> str:
    """Hash of every stage's fingerprint: run-many's finished markers (a finished output is redone
    after any stage's code changed)."""
    blob = "".join(f"{s}={stage_fingerprint(s)}\n" for s in sorted(STAGES))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
