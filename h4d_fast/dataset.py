"""A ``torch.utils.data.Dataset`` over Harmony4D-layout sequences, for fine-tuning a monocular
mesh regressor (HMR2.0-style) on the annotations.

One item per (sequence, exo camera, frame, person) in view (pelvis in front of the camera and at
least ``min_joints_in_image`` of the 24 SMPL joints inside the image). Annotations come from the
sequence's SMPL (:func:`h4d_fast.eval.hmr.read_sequence_smpl`: ``processed_data/sequence.npz`` or
``processed_data/smpl/`` or ``ground_truth/smpl.npz``) and its calibration
(``colmap/workplace`` + ``scale.npy``); everything else is derived from them, as Harmony4D derives
its ``poses2d``/``bbox`` files:

==========================  ==========================================================================
key                         value
==========================  ==========================================================================
``image``                   ``[3, S, S]`` float32 RGB in ``[0, 1]`` (ImageNet-normalised with
                            ``normalize=True``): the square crop around the box, ``S = crop_size``,
                            side ``box_scale x max(w, h)``; zeros outside the image. Read from
                            ``SEQ/exo/<cam>/images/%05d.jpg`` (any size: a downscaled copy of the
                            calibrated resolution is rescaled). Present only when some sequence
                            has images; zeros (and ``has_image`` False) for items without one.
``has_image``               bool
``box``                     ``[4]`` x1, y1, x2, y2: min/max of the projected mesh vertices
                            (calibration pixels, not clipped, as Harmony4D's ``bbox``)
``crop_transform``          ``[2, 3]`` affine calibration pixels -> crop pixels
``keypoints_2d``            ``[44, 3]`` HMR2.0 order (:mod:`h4d_fast.eval.joints`), calibration
                            pixels (lens distortion applied), confidence 1 / 0 (unavailable slot or
                            behind the camera)
``keypoints_2d_crop``       ``[44, 3]`` the same in crop coordinates normalised to ``[-0.5, 0.5]``
                            (HMR2.0's convention: ``u / S - 0.5``)
``keypoints_3d``            ``[44, 4]`` HMR2.0 order, camera frame (metres), confidence
``smpl``                    dict ``global_orient [3]``, ``body_pose [69]``, ``betas [K]``,
                            ``transl [3]``: SMPL parameters in the camera frame
``K``, ``dist``, ``image_size``  ``[3, 3]`` intrinsics, ``[8]`` distortion (h4d_fast.camera layout),
                            ``[2]`` calibrated width, height
``sequence``, ``camera``, ``frame``, ``person``   identifiers (str, str, int, str)
==========================  ==========================================================================

The body model (for the vertex boxes and the 45 joints) is loaded once in the parent process; the
joints and boxes of every item are precomputed at construction, so workers only transform, crop
and decode JPEGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .constants import NUM_SMPL_JOINTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class _Seq:
    name: str
    root: Path
    cam_names: list[str]
    K: np.ndarray  # [V, 3, 3]
    dist: np.ndarray  # [V, 8]
    model: list[str]
    size: np.ndarray  # [V, 2]
    R: np.ndarray  # [V, 3, 3]
    t: np.ndarray  # [V, 3]
    frame_ids: list[int]
    person_names: list[str]
    joints45: np.ndarray  # [F, P, 45, 3] world
    go_cam: np.ndarray  # [V, F, P, 3]
    tr_cam: np.ndarray  # [V, F, P, 3]
    body_pose: np.ndarray  # [F, P, 69]
    betas: np.ndarray  # [F, P, K]
    boxes: np.ndarray  # [V, F, P, 4]
    images: list[Path | None]  # per camera: the images folder


class Harmony4DDataset(Dataset):
    """Per (sequence, camera, frame, person) training items (module docstring).

    Args:
        root: a sequence folder or a folder of sequence folders (any depth).
        crop_size: side ``S`` of the square crop.
        box_scale: crop side = ``box_scale x max(box w, box h)`` (HMR2.0 uses 1.2 of a padded box).
        cameras: keep only these camera names.
        min_joints_in_image: items need this many of the 24 joints inside the image.
        body_model: SMPL model for the meshes (default: the one in the sequence's ``meta.json``,
            else the embedded default model).
        smpl: the SMPL annotations to use (only with a single sequence).
        normalize: ImageNet mean/std normalisation of the crop.
        image_ext: image file extension.
    """

    def __init__(
        self,
        root: str | Path,
        crop_size: int = 256,
        box_scale: float = 1.2,
        cameras: Sequence[str] | None = None,
        min_joints_in_image: int = 6,
        body_model: str | None = None,
        smpl: str | Path | None = None,
        normalize: bool = False,
        image_ext: str = ".jpg",
    ):
        from .eval.hmr import find_sequences

        root = Path(root)
        seqs = find_sequences(root)
        if not seqs:
            from .errors import InputError

            raise InputError(root, "no sequence folders (with colmap/workplace) here")
        if smpl is not None and len(seqs) != 1:
            raise ValueError("smpl= names the annotations of one sequence; got a root of several")
        self.crop_size = int(crop_size)
        self.box_scale = float(box_scale)
        self.normalize = bool(normalize)
        self.image_ext = image_ext
        self.seqs: list[_Seq] = []
        index: list[tuple[int, int, int, int]] = []
        for s in seqs:
            name = s.name if s == root else str(s.relative_to(root))
            sq, ok = self._load(s, name, cameras, min_joints_in_image, body_model, smpl)
            si = len(self.seqs)
            self.seqs.append(sq)
            v, f, p = np.nonzero(ok)
            index.extend(zip([si] * len(v), v.tolist(), f.tolist(), p.tolist()))
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 4)
        self.with_images = any(img is not None for sq in self.seqs for img in sq.images)

    # ---------------------------------------------------------------- construction
    def _load(self, seq: Path, name: str, cameras, min_in: int, body_model, smpl):
        from .body.fast import FastBody
        from .eval.hmr import load_fast_body, read_sequence_smpl, smpl_to_camera
        from .io.colmap import read_colmap
        from .io.harmony4d import SequenceLayout
        from .pipeline.export import boxes_from_vertices

        L = SequenceLayout(seq)
        cams = read_colmap(L.colmap, "auto", camera_names=list(cameras) if cameras else None)
        gt = read_sequence_smpl(seq, smpl)
        fast: FastBody = load_fast_body(body_model or gt.body_model, "cpu", torch.float64)
        F, P = len(gt.frame_ids), len(gt.person_names)
        n = F * P
        d = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
        go, bp, be, tr = d(gt.global_orient).reshape(n, 3), d(gt.body_pose).reshape(n, 69), d(gt.betas).reshape(n, -1), d(gt.transl).reshape(n, 3)
        with torch.no_grad():
            j45 = fast.joints(go, bp, be, tr)  # [n, 45, 3] (all 21 vertex joints)
            boxes = []
            for i in range(0, n, 64):
                v, _ = fast.vertices(go[i : i + 64], bp[i : i + 64], be[i : i + 64], tr[i : i + 64])
                boxes.append(boxes_from_vertices(cams, v[:, None].float()))  # [V, c, 1, 4]
            box = torch.cat(boxes, 1).reshape(len(cams), F, P, 4) if boxes else torch.zeros(len(cams), F, P, 4)
            rest_pelvis = fast.rest_joints(be)[:, 0]  # [n, 3]
            R = cams.R.to(torch.float64)
            t = cams.t.to(torch.float64)
            goc, trc = smpl_to_camera(go[None].expand(len(cams), n, 3), tr[None].expand(len(cams), n, 3), R[:, None], t[:, None], rest_pelvis[None])
            uv, depth = cams.project(j45[:, :NUM_SMPL_JOINTS])  # [n, 24, V, 2], [n, 24, V]
        V = len(cams)
        W = cams.size[:, 0].to(torch.float64)
        H = cams.size[:, 1].to(torch.float64)
        inside = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 1] >= 0) & (uv[..., 0] < W) & (uv[..., 1] < H)
        ok = (inside.sum(1) >= min_in) & (depth[:, 0] > 0)  # [n, V]
        ok = ok.T.reshape(V, F, P) & torch.as_tensor(gt.valid)[None] & torch.isfinite(box).all(-1)
        images: list[Path | None] = []
        for c in cams.names:
            folder = L.images(c)
            images.append(folder if folder.is_dir() else None)
        sq = _Seq(
            name=name, root=seq, cam_names=list(cams.names), K=cams.K.numpy(), dist=cams.dist.numpy(), model=list(cams.model),
            size=cams.size.numpy(), R=R.numpy(), t=t.numpy(), frame_ids=list(gt.frame_ids), person_names=list(gt.person_names),
            joints45=j45.reshape(F, P, -1, 3).numpy(), go_cam=goc.reshape(V, F, P, 3).numpy(), tr_cam=trc.reshape(V, F, P, 3).numpy(),
            body_pose=gt.body_pose.astype(np.float64), betas=gt.betas.astype(np.float64), boxes=box.double().numpy(), images=images,
        )
        return sq, ok.numpy()

    # ---------------------------------------------------------------- items
    def __len__(self) -> int:
        return int(self.index.shape[0])

    def _project(self, sq: _Seq, v: int, Xc: np.ndarray) -> np.ndarray:
        from .camera import MODEL_ID, distort

        X = torch.as_tensor(Xc, dtype=torch.float64)
        z = X[:, 2]
        zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
        xn = (X[:, :2] / zs[:, None])[:, None]  # [J, 1, 2]
        xd = distort(xn, torch.as_tensor(sq.dist[v : v + 1]), torch.tensor([MODEL_ID[sq.model[v]]]))[:, 0]
        K = sq.K[v]
        return np.stack([xd[:, 0].numpy() * K[0, 0] + K[0, 2], xd[:, 1].numpy() * K[1, 1] + K[1, 2]], -1)

    def crop_transform(self, box: np.ndarray) -> np.ndarray:
        """``[2, 3]`` affine from calibration pixels to the ``S x S`` crop of ``box``."""
        S = self.crop_size
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        side = max(box[2] - box[0], box[3] - box[1], 1.0) * self.box_scale
        s = S / side
        return np.array([[s, 0.0, S / 2 - s * cx], [0.0, s, S / 2 - s * cy]])

    def _crop(self, sq: _Seq, v: int, fid: int, A: np.ndarray) -> tuple[np.ndarray, bool]:
        import cv2

        S = self.crop_size
        folder = sq.images[v]
        img = None
        if folder is not None:
            p = folder / f"{fid:05d}{self.image_ext}"
            if p.is_file():
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            return np.zeros((3, S, S), np.float32), False
        W, H = float(sq.size[v, 0]), float(sq.size[v, 1])
        ih, iw = img.shape[:2]
        # image pixels -> calibration pixels -> crop (the image may be a downscaled copy)
        to_calib = np.diag([W / iw, H / ih, 1.0])
        M = np.vstack([A, [0, 0, 1]]) @ to_calib
        crop = cv2.warpAffine(img, M[:2], (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        x = crop[..., ::-1].astype(np.float32) / 255.0  # RGB
        if self.normalize:
            x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)), True

    def __getitem__(self, i: int) -> dict[str, Any]:
        from .eval.joints import to_hmr2_2d, to_hmr2_3d

        si, v, f, p = (int(x) for x in self.index[i])
        sq = self.seqs[si]
        Xw = sq.joints45[f, p]
        Xc = Xw @ sq.R[v].T + sq.t[v]  # [45, 3]
        front = Xc[:, 2] > 0
        uv = self._project(sq, v, Xc)
        kp2d45 = np.concatenate([uv, front[:, None].astype(np.float64)], -1)
        kp2d = to_hmr2_2d(kp2d45, "smpl45")
        kp3d = to_hmr2_3d(np.concatenate([Xc, np.ones((45, 1))], -1), "smpl45")
        box = sq.boxes[v, f, p]
        A = self.crop_transform(box)
        kc = kp2d.copy()
        kc[:, :2] = (kp2d[:, :2] @ A[:, :2].T + A[:, 2]) / self.crop_size - 0.5
        kc[:, :2] *= kc[:, 2:] > 0
        fid = sq.frame_ids[f]
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        item: dict[str, Any] = {
            "box": f32(box),
            "crop_transform": f32(A),
            "keypoints_2d": f32(kp2d),
            "keypoints_2d_crop": f32(kc),
            "keypoints_3d": f32(kp3d),
            "smpl": {
                "global_orient": f32(sq.go_cam[v, f, p]),
                "body_pose": f32(sq.body_pose[f, p]),
                "betas": f32(sq.betas[f, p]),
                "transl": f32(sq.tr_cam[v, f, p]),
            },
            "K": f32(sq.K[v]),
            "dist": f32(sq.dist[v]),
            "image_size": torch.as_tensor(sq.size[v].astype(np.int64)),
            "sequence": sq.name,
            "camera": sq.cam_names[v],
            "frame": fid,
            "person": sq.person_names[p],
        }
        has = False
        if self.with_images:
            img, has = self._crop(sq, v, fid, A)
            item["image"] = torch.from_numpy(img)
        item["has_image"] = has
        return item


__all__ = ["Harmony4DDataset", "IMAGENET_MEAN", "IMAGENET_STD"]
