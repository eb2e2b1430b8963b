"""The fine-tuning Dataset: items per (sequence, camera, frame, person), crops from tiny JPEGs
(a tenth of the calibrated 4K size), HMR2.0-order keypoints, camera-frame SMPL, DataLoader with
two workers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")
cv2 = pytest.importorskip("cv2")

from h4d_fast.body import DefaultModelUnavailable  # noqa: E402
from h4d_fast.body.fast import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402
from h4d_fast.data import Capture, Detections, GroundTruth  # noqa: E402
from h4d_fast.dataset import Harmony4DDataset  # noqa: E402
from h4d_fast.eval.hmr import load_fast_body  # noqa: E402
from h4d_fast.eval.joints import HMR2_FROM_SMPL45, to_hmr2_3d  # noqa: E402
from h4d_fast.io.harmony4d import write_sequence  # noqa: E402
from helpers import ring_cameras  # noqa: E402

F, V, P = 3, 3, 2
COLOURS = ((0, 0, 255), (255, 0, 0))  # BGR: person 0 red, person 1 blue
SMALL = 10  # images stored at 1/10 of the calibrated size


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    try:
        fast = load_fast_body(None, "cpu")
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(f"default body model unavailable: {e}")
    g = torch.Generator().manual_seed(5)
    cams = ring_cameras(V, seed=5)
    up = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    go = matrix_to_axis_angle(up)[None, None].expand(F, P, 3) + 0.05 * torch.randn(F, P, 3, generator=g, dtype=torch.float64)
    bp = 0.1 * torch.randn(F, P, 69, generator=g, dtype=torch.float64)
    betas = 0.5 * torch.randn(P, 10, generator=g, dtype=torch.float64)
    tr = torch.tensor([[-0.5, 0.2, 1.0], [0.5, -0.2, 1.0]], dtype=torch.float64)[None].expand(F, P, 3).contiguous()
    root = tmp_path_factory.mktemp("ds")
    seq = root / "01_hugging" / "001"
    cap = Capture(cams, Detections.empty(F, V, 1), list(range(1, F + 1)), ["aria01", "aria02"])
    smpl = {"global_orient": go.contiguous(), "body_pose": bp, "transl": tr, "betas": betas}
    write_sequence(seq, cap, gt=GroundTruth(torch.zeros(F, P, 17, 4), smpl), meta={"body_model": "default"})
    # tiny JPEGs: a disc in the person's colour at each projected SMPL joint
    n = F * P
    j = fast.joints(go.reshape(n, 3), bp.reshape(n, 69), betas[None].expand(F, P, 10).reshape(n, 10), tr.reshape(n, 3))[:, :24]
    uv, _ = cams.project(j.reshape(F, P, 24, 3))  # [F, P, 24, V, 2]
    W, H = int(cams.size[0, 0]) // SMALL, int(cams.size[0, 1]) // SMALL
    for v, c in enumerate(cams.names):
        d = seq / "exo" / c / "images"
        d.mkdir(parents=True)
        for f in range(F):
            img = np.full((H, W, 3), 255, np.uint8)
            for p in range(P):
                for x, y in (uv[f, p, :, v] / SMALL).tolist():
                    cv2.circle(img, (int(round(x)), int(round(y))), 3, COLOURS[p], -1)
            cv2.imwrite(str(d / f"{f + 1:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return {"root": root, "seq": seq, "cams": cams, "uv": uv, "fast": fast}


def test_items_geometry(seq):
    ds = Harmony4DDataset(seq["root"], crop_size=64)
    assert len(ds) == F * V * P  # both people in view of every camera
    fast, cams = seq["fast"], seq["cams"]
    for i in (0, 7, len(ds) - 1):
        it = ds[i]
        assert it["image"].shape == (3, 64, 64) and it["has_image"]
        assert it["sequence"] == "01_hugging/001" and it["camera"] in cams.names and it["person"] in ("aria01", "aria02")
        v = cams.names.index(it["camera"])
        # the camera-frame SMPL parameters reproduce the camera-frame 3D keypoints
        s = {k: x.double()[None] for k, x in it["smpl"].items()}
        j45 = fast.joints(s["global_orient"], s["body_pose"], s["betas"], s["transl"])[0]
        exp = to_hmr2_3d(j45, "smpl45")
        torch.testing.assert_close(it["keypoints_3d"].double(), exp, atol=2e-5, rtol=0)
        # 2D keypoints: the pinhole projection of the 3D ones; slot by slot from the table
        k3 = it["keypoints_3d"].double()
        K = it["K"].double()
        for slot, src in enumerate(HMR2_FROM_SMPL45):
            assert float(it["keypoints_2d"][slot, 2]) == (1.0 if src >= 0 else 0.0)
            if src >= 0:
                x = K @ k3[slot, :3]
                torch.testing.assert_close(it["keypoints_2d"][slot, :2].double(), x[:2] / x[2], atol=0.05, rtol=0)
        # the box holds the 2D joints; the crop coordinates follow the crop transform
        box = it["box"]
        ok = it["keypoints_2d"][:, 2] > 0
        kp = it["keypoints_2d"][ok, :2]
        assert bool((kp[:, 0] >= box[0] - 1).all() and (kp[:, 0] <= box[2] + 1).all() and (kp[:, 1] >= box[1] - 1).all() and (kp[:, 1] <= box[3] + 1).all())
        A = it["crop_transform"].double()
        kc = (kp.double() @ A[:, :2].T + A[:, 2]) / 64 - 0.5
        torch.testing.assert_close(it["keypoints_2d_crop"][ok, :2].double(), kc, atol=1e-4, rtol=0)
        assert bool((kc.abs() < 0.5).all())
        assert tuple(it["image_size"].tolist()) == tuple(cams.size[v].tolist())


def test_crops_show_the_person(seq):
    """Each crop, taken from a JPEG a tenth of the calibrated size, shows the item's own colour at
    its joints (where the other person is not close)."""
    ds = Harmony4DDataset(seq["seq"], crop_size=96)
    uv = seq["uv"]
    pal = np.asarray(COLOURS + ((255, 255, 255),), np.float64)
    checked = hits = 0
    for i in range(len(ds)):
        it = ds[i]
        v = seq["cams"].names.index(it["camera"])
        f, p = it["frame"] - 1, ("aria01", "aria02").index(it["person"])
        img = (it["image"].numpy().transpose(1, 2, 0)[..., ::-1] * 255)  # back to BGR
        kc = it["keypoints_2d_crop"].numpy()
        other = uv[f, 1 - p, :, v].numpy()
        for slot in range(25, 37):  # the 12 limb joints
            src = HMR2_FROM_SMPL45[slot]
            if np.min(np.linalg.norm(other - uv[f, p, src, v].numpy(), axis=1)) < 10 * SMALL:
                continue
            x, y = (kc[slot, :2] + 0.5) * 96
            c = img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2].reshape(-1, 3).mean(0)
            checked += 1
            hits += int(np.argmin(np.linalg.norm(pal - c, axis=1)) == p)
    assert checked >= 30 and hits >= 0.9 * checked, (hits, checked)


def test_dataloader_with_workers(seq):
    ds = Harmony4DDataset(seq["root"], crop_size=32, normalize=True)
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    n = 0
    frames = []
    for b in dl:
        B = b["keypoints_2d"].shape[0]
        assert b["image"].shape == (B, 3, 32, 32) and b["keypoints_3d"].shape == (B, 44, 4)
        assert b["smpl"]["body_pose"].shape == (B, 69) and b["box"].shape == (B, 4)
        assert len(b["camera"]) == B and b["has_image"].all()
        frames += b["frame"].tolist()
        n += B
    assert n == len(ds) == F * V * P
    assert sorted(set(frames)) == list(range(1, F + 1))


def test_without_images(seq, tmp_path):
    import shutil

    s2 = tmp_path / "noimg"
    shutil.copytree(seq["seq"], s2, ignore=shutil.ignore_patterns("exo"))
    ds = Harmony4DDataset(s2)
    it = ds[0]
    assert "image" not in it and it["has_image"] is False
    assert it["keypoints_2d"].shape == (44, 3)
