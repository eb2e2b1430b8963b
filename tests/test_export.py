"""Harmony4D export of a SMPL fit and its reader (ours and the released per-frame files)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("smplx")

from h4d_fast.body.fast import FastBody, with_meshes  # noqa: E402
from h4d_fast.constants import COCO_TO_SMPL45  # noqa: E402
from h4d_fast.errors import InputError  # noqa: E402
from h4d_fast.io.atomic import write_npy  # noqa: E402
from h4d_fast.io.detections import read_npy  # noqa: E402
from h4d_fast.io.smpl_layout import read_smpl_sequence  # noqa: E402
from h4d_fast.pipeline.export import export_harmony4d  # noqa: E402
from helpers import body_model_or_skip, ring_cameras, two_person_fit  # noqa: E402

NAMES = ["aria01", "aria02"]


@pytest.fixture(scope="session")
def body():
    return body_model_or_skip()


def test_export_round_trip(body, tmp_path):
    res = two_person_fit(F=3)
    cams = ring_cameras(3, model="fisheye")
    fids = [5, 6, 7]
    write_npy(tmp_path / "smpl" / "00009.npy", {"aria01": {}})  # a stale frame of an earlier write
    st = export_harmony4d(tmp_path, res, body, fids, NAMES, cameras=cams)
    assert st["files"] == 3 * 2 + 3 * 3 * 3 + 1  # smpl, poses3d; poses2d, bbox, smpl_cam per camera; sequence.npz
    for d in ("smpl", "poses3d", "poses2d/cam01", "bbox/cam03"):
        assert sorted(p.name for p in (tmp_path / d).iterdir()) == ["00005.npy", "00006.npy", "00007.npy"]
    verts, joints = FastBody(body).vertices(
        res.global_orient.reshape(-1, 3), res.body_pose.reshape(-1, 69), res.betas.repeat(3, 1), res.transl.reshape(-1, 3)
    )
    verts, joints = verts.view(3, 2, -1, 3), joints.view(3, 2, 45, 3)
    for prefer in ("npz", "files"):
        back = read_smpl_sequence(tmp_path, prefer=prefer)
        assert list(back["frame_ids"]) == fids and list(back["person_names"]) == NAMES
        for k in ("global_orient", "body_pose", "transl"):
            np.testing.assert_allclose(back[k], getattr(res, k).numpy(), atol=1e-6)
        np.testing.assert_allclose(back["betas"], np.broadcast_to(res.betas.numpy()[None], (3, 2, 10)), atol=1e-6)
        np.testing.assert_allclose(back["vertices"], verts.numpy(), atol=1e-5)
        np.testing.assert_allclose(back["joints"], joints.numpy(), atol=1e-5)
        assert back["valid"].all()
    # one frame file, as the released ones: dicts of float32 arrays
    d = read_npy(tmp_path / "smpl" / "00006.npy")
    assert set(d) == set(NAMES)
    ident = {k: d["aria02"][k] for k in ("body_model_sha256", "body_model_gender", "body_model_num_betas")}
    assert len(ident["body_model_sha256"]) == 64 and ident["body_model_num_betas"] == 10, ident  # the body model's identity
    assert {k: v.shape for k, v in d["aria02"].items() if not k.startswith("body_model_")} == {
        "global_orient": (3,), "transl": (3,), "body_pose": (69,), "betas": (10,), "vertices": (body.num_vertices, 3), "joints": (45, 3),
    }  # fmt: skip
    # poses3d: COCO joints of the fitted model, valid 1
    p3 = read_npy(tmp_path / "poses3d" / "00007.npy")
    np.testing.assert_allclose(p3["aria01"][:, :3], joints[2, 0, list(COCO_TO_SMPL45)].numpy(), atol=1e-5)
    assert (p3["aria01"][:, 3] == 1).all()
    # poses2d and bbox: the projections of joints and vertices (not clipped, rounded outward)
    uv_j, _ = cams.project(joints[1, 1].double())
    p2 = read_npy(tmp_path / "poses2d" / "cam02" / "00006.npy")
    np.testing.assert_allclose(p2["aria02"], uv_j[:, 1].numpy(), atol=1e-2)
    uv_v, depth = cams.project(verts[0, 0].double())  # [N, V, 2]
    assert (depth > 0).all()
    bb = read_npy(tmp_path / "bbox" / "cam03" / "00005.npy")["aria01"]
    lo, hi = uv_v[:, 2].amin(0).numpy(), uv_v[:, 2].amax(0).numpy()
    assert bb.dtype == np.int64
    assert (bb[:2] <= lo + 1e-2).all() and (bb[:2] > lo - 1).all()
    assert (bb[2:] >= hi - 1e-2).all() and (bb[2:] < hi + 1).all()
    # the npz holds the same boxes unrounded
    z = read_smpl_sequence(tmp_path)
    assert z["camera_names"] == ["cam01", "cam02", "cam03"]
    np.testing.assert_allclose(z["bbox"][2, 0, 0], np.concatenate([lo, hi]), atol=1e-2)


def test_export_without_cameras_and_vertices(body, tmp_path):
    res = two_person_fit(F=2)
    export_harmony4d(tmp_path, res, body, [1, 2], NAMES, write_vertices=False, write_poses3d=False)
    assert not (tmp_path / "poses2d").exists() and not (tmp_path / "bbox").exists()
    assert not (tmp_path / "poses3d").exists()
    back = read_smpl_sequence(tmp_path)
    assert "vertices" not in back and back["joints"].shape == (2, 2, 45, 3)
    # recomputed on request
    back = with_meshes(read_smpl_sequence(tmp_path), body)
    assert back["vertices"].shape == (2, 2, body.num_vertices, 3)


def test_released_style_files_without_vertices_load(body, tmp_path):
    """Harmony4D's released smpl files: per-person dicts with (1, N)-shaped arrays, an extra
    epoch_loss, no vertices/joints; one person missing in one frame."""
    res = two_person_fit(F=3, seed=3)
    folder = tmp_path / "processed_data" / "smpl"
    for f in range(3):
        d = {}
        for p, n in enumerate(NAMES):
            if f == 1 and p == 1:
                continue
            d[n] = {
                "global_orient": res.global_orient[f, p].numpy()[None].astype(np.float64),
                "transl": res.transl[f, p].numpy()[None],
                "body_pose": res.body_pose[f, p].numpy()[None],
                "betas": res.betas[p].numpy()[None],
                "epoch_loss": np.float32(0.5),
            }
        write_npy(folder / f"{f + 1:05d}.npy", d)
    back = read_smpl_sequence(tmp_path / "processed_data")
    assert back["valid"].tolist() == [[True, True], [True, False], [True, True]]
    assert "vertices" not in back
    np.testing.assert_allclose(back["body_pose"][2, 1], res.body_pose[2, 1].numpy(), atol=1e-6)
    assert (back["global_orient"][1, 1] == 0).all()
    back = with_meshes(read_smpl_sequence(folder), body)  # the smpl folder itself, meshes recomputed
    v, j = body.forward(res.global_orient[0], res.body_pose[0], res.betas, res.transl[0])
    np.testing.assert_allclose(back["vertices"][0], v.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(back["joints"][0], j.detach().numpy(), atol=1e-5)
    # a broken file names itself
    write_npy(folder / "00004.npy", {"aria01": {"transl": np.zeros(3)}})
    with pytest.raises(InputError, match="00004.npy"):
        read_smpl_sequence(folder)
    with pytest.raises(InputError):
        read_smpl_sequence(tmp_path / "nothing")


def test_export_leaves_absent_people_out_of_their_frames(body, tmp_path):
    res = two_person_fit(F=3)
    cams = ring_cameras(2, model="pinhole")
    present = np.array([[True, True], [True, False], [False, True]])
    export_harmony4d(tmp_path, res, body, [1, 2, 3], NAMES, cameras=cams, present=present)
    for f, fid in enumerate([1, 2, 3]):
        want = [n for p, n in enumerate(NAMES) if present[f, p]]
        assert sorted(read_npy(tmp_path / "smpl" / f"{fid:05d}.npy")) == want
        assert sorted(read_npy(tmp_path / "poses3d" / f"{fid:05d}.npy")) == want
        assert sorted(read_npy(tmp_path / "poses2d" / "cam01" / f"{fid:05d}.npy")) == want
        assert set(read_npy(tmp_path / "bbox" / "cam02" / f"{fid:05d}.npy")) <= set(want)
    back = read_smpl_sequence(tmp_path, prefer="files")
    assert back["valid"].tolist() == present.tolist()
    assert read_smpl_sequence(tmp_path, prefer="npz")["valid"].tolist() == present.tolist()
