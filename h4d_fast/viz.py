"""``h4d viz``: draw what a sequence (or a run on it) knows over each camera's images.

Per exo camera and frame: each person's projected mesh (filled with a z-buffer and flat shading,
or as a wireframe), its box (min/max of the projected vertices, as Harmony4D's ``bbox``) and its
2D keypoints (the 3D COCO keypoints projected, with the COCO skeleton), in the person's own
colour, over ``SEQ/exo/<cam>/images/%05d.jpg`` (downscaled to ``width``) or a blank canvas when
the sequence has no images; written as ``OUT/<cam>.mp4`` (OpenCV, ``mp4v``), ``OUT/<cam>.gif``
or ``OUT/<cam>/%05d.png``. Plus ``OUT/3d/%05d.png``: matplotlib 3D views of the skeletons and
(subsampled) mesh vertices of a few frames.

What is drawn:

* ``run=OUT`` given: the run's ``OUT/poses3d.npz`` keypoints and, when it has them,
  ``OUT/processed_data`` meshes (``sequence.npz`` / ``smpl/``).
* else the sequence's own annotations: SMPL from ``processed_data/sequence.npz`` /
  ``processed_data/smpl/`` or ``ground_truth/smpl.npz``; keypoints from
  ``ground_truth/poses3d.npy`` or ``processed_data/poses3d/`` (else the SMPL model's COCO joints).

Colours (BGR) per person in order: :data:`PALETTE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .constants import COCO_LIMBS, COCO_TO_SMPL45
from .errors import InputError
from .viz_video import (  # re-exported
    _frame_slice,  # noqa: F401
    _read_image,  # noqa: F401
    _source_videos,  # noqa: F401
    _VideoFrames,  # noqa: F401
    _Writer,  # noqa: F401
)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 40, 230),  # red
    (230, 150, 20),  # blue
    (40, 200, 40),  # green
    (20, 200, 240),  # yellow
    (200, 40, 200),  # magenta
    (200, 200, 40),  # cyan
)


def person_colour(p: int) -> tuple[int, int, int]:
    return PALETTE[p % len(PALETTE)]


# ============================================================================ scene
@dataclass
class Scene:
    """What to draw, world frame: ``F`` frames, ``P`` people."""

    frame_ids: list[int]
    person_names: list[str]
    keypoints: np.ndarray | None  # [F, P, 17, 4] x, y, z, valid
    smpl: Any = None  # SequenceSMPL-like (params, optional stored vertices) aligned with frame_ids, or None
    smpl_rows: np.ndarray | None = None  # [F] row of each frame in smpl (-1: none)
    body: Any = None  # FastBody for recomputing vertices

    def vertices(self, f: int) -> Tensor | None:
        """``[P, N, 3]`` world vertices of frame position ``f`` (NaN for invalid people), or None."""
        if self.smpl is None or self.smpl_rows is None or self.smpl_rows[f] < 0:
            return None
        r = int(self.smpl_rows[f])
        s = self.smpl
        valid = torch.as_tensor(s.valid[r])
        if s.vertices is not None and (self.body is None or s.vertices.shape[-2] == self.body.v_template.shape[0]):
            v = torch.as_tensor(np.asarray(s.vertices[r]), dtype=torch.float64)
        elif self.body is None:
            return None
        else:
            b = self.body
            d = lambda x: torch.as_tensor(np.asarray(x[r]), dtype=b.dtype, device=b.device)  # noqa: E731
            with torch.no_grad():
                v, _ = b.vertices(d(s.global_orient), d(s.body_pose), d(s.betas), d(s.transl))
            v = v.double().cpu()
        return torch.where(valid[:, None, None], v, torch.full_like(v, float("nan")))

    def faces(self) -> Tensor | None:
        return None if self.body is None else self.body.faces.long().cpu()


def load_scene(seq: Path, run: Path | None = None, body_model: str | None = None, device: str = "cpu", need_mesh: bool = True) -> Scene:
    """Collect keypoints and meshes to draw (module docstring)."""
    from .eval.hmr import SequenceSMPL, load_fast_body, read_sequence_smpl
    from .io.harmony4d import SequenceLayout, read_ground_truth, read_meta, read_poses3d

    seq = Path(seq)
    L = SequenceLayout(seq)
    kp = fids = names = None
    smpl: SequenceSMPL | None = None
    if run is not None:
        run = Path(run)
        f = run / "poses3d.npz"
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                kp = np.asarray(z["poses3d"], np.float64)
                fids = [int(x) for x in z["frame_ids"]]
                names = [str(x) for x in z["person_names"]]
        pd = run / "processed_data"
        if (pd / "sequence.npz").is_file() or (pd / "smpl").is_dir():
            smpl = read_sequence_smpl(seq, pd)
        if kp is None and smpl is None:
            raise InputError(run, "nothing to draw (no poses3d.npz and no processed_data/sequence.npz or smpl/)")
    else:
        try:
            smpl = read_sequence_smpl(seq)
        except InputError:
            smpl = None
        gt = read_ground_truth(seq)
        meta = read_meta(seq) or {}
        if gt is not None:
            kp = gt.poses3d.double().numpy()
            fids = [int(x) for x in meta.get("frame_ids", range(1, kp.shape[0] + 1))]
            names = [str(x) for x in meta.get("person_names", smpl.person_names if smpl else [f"person{p}" for p in range(kp.shape[1])])]
        elif L.poses3d.is_dir():
            kp, fids = read_poses3d(L.poses3d, smpl.person_names if smpl else None)
            kp = kp.astype(np.float64)
            names = list(smpl.person_names) if smpl else None
            if names is None:
                from .io.npy import read_npy

                first = read_npy(sorted(L.poses3d.glob("*.npy"))[0])
                names = sorted(str(k) for k in first)
        if kp is None and smpl is None:
            raise InputError(seq, "nothing to draw: no SMPL annotations, ground truth or processed_data/poses3d")
    if kp is not None and smpl is not None and not (kp[..., 3] > 0).any():
        kp = fids = None  # an empty keypoint file: use the SMPL model's
    if run is not None and body_model is None and (run / "config.toml").is_file():
        body_model = _run_body_model(run / "config.toml")
    body = None
    if smpl is not None and (need_mesh or kp is None):
        body = load_fast_body(body_model or smpl.body_model, device)
    if fids is None:  # keypoints from the SMPL model's COCO joints
        fids, names = list(smpl.frame_ids), list(smpl.person_names)
        kp = _smpl_coco(smpl, body)
    rows = None
    if smpl is not None:
        pos = {f: i for i, f in enumerate(smpl.frame_ids)}
        rows = np.asarray([pos.get(f, -1) for f in fids], np.int64)
        # people in the keypoints' order
        if names is not None and list(smpl.person_names) != list(names) and set(names) <= set(smpl.person_names):
            smpl = _reorder_people(smpl, [list(smpl.person_names).index(n) for n in names])
    return Scene(list(fids), list(names), kp, smpl, rows, body if need_mesh else None)


def _run_body_model(path: Path) -> str | None:
    """``fit.body_model`` of a run's ``config.toml`` (the meshes were fitted with it)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        import tomli as tomllib
    try:
        v = tomllib.loads(path.read_text()).get("fit", {}).get("body_model")
    except (OSError, ValueError):
        return None
    return None if v in (None, "", "default") else str(v)


def _reorder_people(s, idx: list[int]):
    from dataclasses import replace

    pick = lambda a: None if a is None else np.asarray(a)[:, idx]  # noqa: E731
    return replace(s, person_names=[s.person_names[i] for i in idx], valid=pick(s.valid), global_orient=pick(s.global_orient),
                   body_pose=pick(s.body_pose), betas=pick(s.betas), transl=pick(s.transl), joints=pick(s.joints), vertices=pick(s.vertices))


def _smpl_coco(s, body) -> np.ndarray:
    F, P = s.global_orient.shape[:2]
    if s.joints is not None and s.joints.shape[-2] >= 29:
        j = np.asarray(s.joints, np.float64)
    else:
        n = F * P
        d = lambda x, k: torch.as_tensor(np.asarray(x), dtype=body.dtype, device=body.device).reshape(n, k)  # noqa: E731
        with torch.no_grad():
            j = body.joints(d(s.global_orient, 3), d(s.body_pose, 69), d(s.betas, s.betas.shape[-1]), d(s.transl, 3))
        j = j.double().cpu().numpy().reshape(F, P, -1, 3)
    coco = j[:, :, list(COCO_TO_SMPL45)]
    return np.concatenate([coco, np.asarray(s.valid, np.float64)[:, :, None, None].repeat(17, 2)], -1)


# ============================================================================ rasterizer
def rasterize(uv: Tensor, z: Tensor, faces: Tensor, width: int, height: int, max_side: int = 128) -> tuple[Tensor, Tensor]:
    """Z-buffer rasterization of triangles.

    Args:
        uv: ``[N, 2]`` vertex pixels; z ``[N]`` depths (> 0 in front); faces ``[T, 3]``.
        max_side: triangles whose pixel box is larger are skipped (close-ups only).
    Returns:
        ``(face_id [H, W] int64, -1 for background; depth [H, W])``.
    """
    dev = uv.device
    HW = width * height
    zbuf = torch.full((HW,), float("inf"), dtype=uv.dtype, device=dev)
    fid = torch.full((HW,), -1, dtype=torch.long, device=dev)
    tri = uv[faces]  # [T, 3, 2]
    tz = z[faces]  # [T, 3]
    ok = (tz > 1e-3).all(1) & torch.isfinite(tri).all(2).all(1)
    lo = tri.amin(1).floor()
    hi = tri.amax(1).floor()
    ok &= (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] < width) & (lo[:, 1] < height)
    lo = lo.clamp_min(0)
    hi = torch.minimum(hi, torch.tensor([width - 1, height - 1], dtype=uv.dtype, device=dev))
    side = (hi - lo).amax(1) + 1
    x0 = tri[:, 0]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok &= area.abs() > 1e-9
    cands: list[tuple[Tensor, Tensor, Tensor]] = []
    prev = 0
    for k in (1, 2, 4, 8, 16, 32, 64, 128):
        if k > max_side:
            break
        sel = torch.nonzero(ok & (side > prev) & (side <= k)).flatten()
        prev = k
        if sel.numel() == 0:
            continue
        oy, ox = torch.meshgrid(torch.arange(k, device=dev), torch.arange(k, device=dev), indexing="ij")
        off = torch.stack([ox.flatten(), oy.flatten()], -1).to(uv.dtype)  # [k*k, 2]
        step = max(1, (1 << 22) // (k * k))
        for s0 in range(0, sel.numel(), step):
            t = sel[s0 : s0 + step]
            px = lo[t][:, None] + off[None]  # [b, k*k, 2]
            inb = (px[..., 0] <= hi[t][:, None, 0]) & (px[..., 1] <= hi[t][:, None, 1])
            c = px + 0.5
            d = c - x0[t][:, None]
            a = area[t][:, None]
            w1 = (d[..., 0] * e2[t][:, None, 1] - d[..., 1] * e2[t][:, None, 0]) / a
            w2 = (e1[t][:, None, 0] * d[..., 1] - e1[t][:, None, 1] * d[..., 0]) / a
            w0 = 1 - w1 - w2
            inside = inb & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            if not bool(inside.any()):
                continue
            zz = w0 * tz[t][:, None, 0] + w1 * tz[t][:, None, 1] + w2 * tz[t][:, None, 2]
            b_i, p_i = torch.nonzero(inside, as_tuple=True)
            pix = (px[b_i, p_i, 1].long() * width + px[b_i, p_i, 0].long())
            depth = zz[b_i, p_i]
            zbuf.scatter_reduce_(0, pix, depth, "amin")
            cands.append((pix, depth, t[b_i]))
    for pix, depth, face in cands:
        win = depth <= zbuf[pix]
        fid[pix[win]] = face[win]
    return fid.view(height, width), zbuf.view(height, width)


def draw_meshes(img: np.ndarray, verts_cam: list[Tensor | None], faces: Tensor, project: Callable[[Tensor], Tensor],
                colours: Sequence[tuple[int, int, int]], mode: str = "fill", alpha: float = 0.65) -> np.ndarray:
    """Draw the people's meshes (camera-frame vertices ``[N, 3]`` each, None to skip) on ``img`` (BGR)."""
    import cv2

    H, W = img.shape[:2]
    people = [(p, v) for p, v in enumerate(verts_cam) if v is not None and bool(torch.isfinite(v).all())]
    if not people or mode == "none":
        return img
    if mode == "wire":
        for p, v in people:
            uv = project(v)
            front = v[:, 2] > 1e-3
            e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(1).values.unique(dim=0)
            e = e[front[e].all(1)]
            seg = uv[e].round().cpu().numpy().astype(np.int32)  # [E, 2, 2]
            seg = seg[(np.abs(seg) < 1 << 15).all((1, 2))]
            cv2.polylines(img, list(seg), False, colours[p], 1, cv2.LINE_8)
        return img
    Nv = faces.max().item() + 1 if faces.numel() else 0
    uvs, zs, fs, owner, vc = [], [], [], [], []
    for i, (p, v) in enumerate(people):
        uvs.append(project(v))
        zs.append(v[:, 2])
        fs.append(faces + i * Nv)
        owner.append(torch.full((faces.shape[0],), p, dtype=torch.long))
        vc.append(v)
    uv = torch.cat(uvs).float()
    z = torch.cat(zs).float()
    F_all = torch.cat(fs).to(uv.device)
    own = torch.cat(owner).to(uv.device)
    V_all = torch.cat(vc).float()
    # outward normals: faces turned away from the camera are hidden behind the front ones (closed
    # meshes), so only the front faces are rasterized; flat shading = |cos(normal, viewing ray)|
    a, b, c = V_all[F_all[:, 0]], V_all[F_all[:, 1]], V_all[F_all[:, 2]]
    n = torch.linalg.cross(b - a, c - a, dim=-1)
    ray = (a + b + c) / 3
    cos = (n * ray).sum(-1) / (n.norm(dim=-1) * ray.norm(dim=-1)).clamp_min(1e-12)
    front = torch.nonzero(cos < 0).flatten()
    F_all, own, cos = F_all[front], own[front], cos[front]
    fid, _ = rasterize(uv, z, F_all, W, H)
    shade = 0.35 + 0.65 * cos.abs()
    pal = torch.tensor(colours, dtype=torch.float64)  # [P, 3]
    hit = fid >= 0
    if not bool(hit.any()):
        return img
    f = fid[hit]
    col = (pal[own[f].cpu()] * shade[f].cpu()[:, None].double()).clamp(0, 255).numpy()
    m = hit.cpu().numpy()
    out = img.astype(np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * col
    img[:] = out.clip(0, 255).astype(np.uint8)
    return img


def draw_skeleton(img: np.ndarray, kp: np.ndarray, colour: tuple[int, int, int], radius: int = 3, thickness: int = 2) -> None:
    """COCO-17 keypoints ``[17, 3]`` (x, y, valid) with the COCO limbs."""
    import cv2

    ok = (kp[:, 2] > 0) & np.isfinite(kp[:, :2]).all(1) & (np.abs(kp[:, :2]) < 1 << 15).all(1)
    pts = np.round(np.where(ok[:, None], kp[:, :2], 0)).astype(np.int32)
    for a, b in COCO_LIMBS:
        if ok[a] and ok[b]:
            cv2.line(img, tuple(int(x) for x in pts[a]), tuple(int(x) for x in pts[b]), colour, thickness, cv2.LINE_AA)
    for j in np.nonzero(ok)[0]:
        cv2.circle(img, tuple(int(x) for x in pts[j]), radius, colour, -1, cv2.LINE_AA)


def render_camera_frame(scene: Scene, cams, v: int, f: int, scale: float, size: tuple[int, int], canvas: np.ndarray,
                        mesh: str = "fill", verts: Tensor | None = None, detections: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Draw frame position ``f`` of camera ``v`` onto ``canvas`` (BGR, ``size`` = (w, h)); returns
    the image and ``{"boxes": {person: [x1, y1, x2, y2]}, "keypoints": {person: [17, 3]}}`` in
    output pixels."""
    import cv2

    R = cams.R[v].double()
    t = cams.t[v].double()
    sub = cams.subset([v])

    def project(Xc: Tensor) -> Tensor:
        z = Xc[:, 2]
        zs = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        xn = (Xc[:, :2] / zs[:, None])[:, None]  # [N, 1, 2]
        return sub.normalized_to_pixels(xn.to(sub.dtype))[:, 0].double() * scale

    P = len(scene.person_names)
    info: dict[str, Any] = {"boxes": {}, "keypoints": {}}
    img = canvas
    vc: list[Tensor | None] = [None] * P
    if verts is not None:
        for p in range(P):
            if p < verts.shape[0] and bool(torch.isfinite(verts[p]).all()):
                vc[p] = verts[p] @ R.T + t
        faces = scene.faces()
        if faces is not None and mesh != "none":
            draw_meshes(img, vc, faces, project, [person_colour(p) for p in range(P)], mode=mesh)
    if detections is not None:
        for d in detections:
            draw_skeleton(img, np.concatenate([d[:, :2] * scale, (d[:, 2:] > 0.2)], 1), (160, 160, 160), 2, 1)
    th = max(1, int(round(2 * size[0] / 960)))
    rad = max(2, int(round(3 * size[0] / 960)))
    for p, name in enumerate(scene.person_names):
        col = person_colour(p)
        box = None
        if vc[p] is not None:
            front = vc[p][:, 2] > 1e-3
            if bool(front.any()):
                uv = project(vc[p][front])
                box = torch.cat([uv.amin(0), uv.amax(0)]).numpy()
        kp2 = None
        if scene.keypoints is not None:
            k = torch.as_tensor(scene.keypoints[f, p])
            Xc = k[:, :3] @ R.T + t
            ok = (k[:, 3] > 0) & (Xc[:, 2] > 1e-3)
            uv = project(Xc)
            kp2 = np.concatenate([uv.numpy(), ok.numpy()[:, None].astype(np.float64)], 1)
            if box is None and bool(ok.any()):
                box = np.concatenate([uv[ok].amin(0).numpy(), uv[ok].amax(0).numpy()])
        if box is not None and np.isfinite(box).all() and (np.abs(box) < 1 << 15).all():
            b = np.round(box).astype(int)
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), col, th)
            cv2.putText(img, name, (b[0], max(12, b[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * size[0] / 960 + 0.2, col, 1, cv2.LINE_AA)
            info["boxes"][name] = box.tolist()
        if kp2 is not None:
            info["keypoints"][name] = kp2
    # skeletons last, over every box and label
    for p, name in enumerate(scene.person_names):
        if name in info["keypoints"]:
            draw_skeleton(img, info["keypoints"][name], person_colour(p), rad, th)
    return img, info


def plot_3d(scene: Scene, f: int, path: Path, verts: Tensor | None = None, max_points: int = 2500) -> Path:
    """A matplotlib 3D view of frame position ``f``: skeletons and subsampled vertices per person."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot(projection="3d")
    pts = []
    for p, name in enumerate(scene.person_names):
        b, g, r = person_colour(p)
        col = (r / 255, g / 255, b / 255)
        if verts is not None and p < verts.shape[0] and bool(torch.isfinite(verts[p]).all()):
            N = verts.shape[1]
            pick = torch.randperm(N, generator=torch.Generator().manual_seed(0))[: min(N, max_points)]
            v = verts[p][pick].numpy()
            ax.scatter(v[:, 0], v[:, 1], v[:, 2], s=3, color=col, alpha=0.4, linewidths=0)
            pts.append(v)
        if scene.keypoints is not None:
            k = scene.keypoints[f, p]
            ok = k[:, 3] > 0
            for a, c in COCO_LIMBS:
                if ok[a] and ok[c]:
                    ax.plot(*zip(k[a, :3], k[c, :3]), color=col, lw=2)
            ax.scatter(*k[ok, :3].T, color=col, s=12, label=name)
            pts.append(k[ok, :3])
    if pts:
        a = np.concatenate(pts)
        c = 0.5 * (a.min(0) + a.max(0))
        r = 0.5 * float((a.max(0) - a.min(0)).max()) + 0.1
        ax.set_xlim(c[0] - r, c[0] + r)
        ax.set_ylim(c[1] - r, c[1] + r)
        ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_zlabel("z (m)")
    ax.set_title(f"frame {scene.frame_ids[f]:05d}")
    if scene.keypoints is not None:
        ax.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def visualize(
    seq: Path,
    out: Path,
    run: Path | None = None,
    cameras: str | Sequence[str] | None = None,
    frames: str | None = None,
    width: int = 960,
    mesh: str = "fill",
    fmt: str = "mp4",
    fps: float = 30.0,
    views3d: int = 4,
    detections: bool = False,
    device: str = "auto",
    body_model: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``h4d viz`` (module docstring). Returns ``{"videos": {cam: path}, "views3d": [paths],
    "frames": n, "size": [w, h]}``."""
    from .eval.hmr import resolve_device
    from .io.colmap import read_colmap
    from .io.harmony4d import SequenceLayout

    if fmt not in ("mp4", "gif", "png"):
        raise ValueError(f"fmt must be mp4, gif or png, got {fmt!r}")
    seq, out = Path(seq), Path(out)
    log = log or (lambda s: None)
    L = SequenceLayout(seq)
    if not L.colmap.is_dir():
        raise InputError(L.colmap, "calibration folder missing")
    names = [c.strip() for c in cameras.split(",")] if isinstance(cameras, str) else (list(cameras) if cameras else None)
    cams = read_colmap(L.colmap, "auto", camera_names=names)
    dev = resolve_device(device)
    scene = load_scene(seq, run, body_model, dev, need_mesh=(mesh != "none" or views3d > 0))
    fpos = _frame_slice(frames, len(scene.frame_ids))
    det = None
    if detections:
        from .io.harmony4d import read_sequence

        cap = read_sequence(seq, cameras=list(cams.names))
        det_pos = {f: i for i, f in enumerate(cap.frame_ids)}
        det = (cap.detections, det_pos)
    out.mkdir(parents=True, exist_ok=True)
    src_videos, src_frame_of = _source_videos(seq)
    videos: dict[str, str] = {}
    vcache: dict[int, Tensor | None] = {}

    def verts_of(f: int) -> Tensor | None:
        if f not in vcache:
            v = scene.vertices(f)
            vcache[f] = None if v is None else v.double().cpu()
        return vcache[f]

    size_out = None
    for v, cname in enumerate(cams.names):
        W, H = int(cams.size[v, 0]), int(cams.size[v, 1])
        scale = 1.0 if width <= 0 else width / W
        size = (int(round(W * scale)), int(round(H * scale)))
        size_out = size
        path = out / (f"{cname}.{fmt}" if fmt != "png" else cname)
        wr = _Writer(path, fmt, fps, size)
        img_dir = L.images(cname)
        vid = _VideoFrames(src_videos[cname], src_frame_of) if not img_dir.is_dir() and cname in src_videos else None
        for f in fpos:
            fid = scene.frame_ids[f]
            canvas = _read_image(img_dir, fid, size) if img_dir.is_dir() else (vid.read(fid, size) if vid else None)
            if canvas is None:
                canvas = np.full((size[1], size[0], 3), 32, np.uint8)
            d = None
            if det is not None and fid in det[1]:
                i = det[1][fid]
                ok = det[0].valid[i, v]
                d = det[0].kpts[i, v][ok].double().numpy()
            img, _ = render_camera_frame(scene, cams, v, f, scale, size, canvas, mesh, verts_of(f), d)
            wr.write(img, fid)
        wr.close()
        if vid is not None:
            vid.close()
        videos[cname] = str(path)
        log(f"  {cname}: {len(fpos)} frames -> {path}")
    shots: list[str] = []
    if views3d > 0 and fpos:
        pick = sorted({fpos[int(round(i))] for i in np.linspace(0, len(fpos) - 1, min(views3d, len(fpos)))})
        for f in pick:
            shots.append(str(plot_3d(scene, f, out / "3d" / f"{scene.frame_ids[f]:05d}.png", verts_of(f))))
        log(f"  3d: {len(shots)} views -> {out / '3d'}")
    return {"videos": videos, "views3d": shots, "frames": len(fpos), "size": list(size_out) if size_out else None}


__all__ = ["PALETTE", "Scene", "draw_meshes", "draw_skeleton", "load_scene", "plot_3d", "rasterize", "render_camera_frame", "visualize"]
