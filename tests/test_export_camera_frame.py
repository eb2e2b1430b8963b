"""SMPL in every camera's frame and the body model's identity in the export (issue 15, item 1)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body import load_body_model  # noqa: E402
from h4d_fast.body.camera_frame import body_model_identity, smpl_to_cameras  # noqa: E402
from h4d_fast.body.fast import FastBody  # noqa: E402
from h4d_fast.camera import CameraSet  # noqa: E402
from h4d_fast.io.detections import read_npy  # noqa: E402
from h4d_fast.io.frame_files import npz_members  # noqa: E402
from h4d_fast.pipeline.export import export_harmony4d  # noqa: E402
from h4d_fast.pipeline.fit import FitResult  # noqa: E402
from helpers import body_model_or_skip, ring_cameras, two_person_fit  # noqa: E402

NAMES = ["aria01", "aria02"]


@pytest.fixture(scope="module")
def body():
    return body_model_or_skip()


def _result(F: int = 3, seed: int = 0) -> FitResult:
    """Orientations well away from the identity (the composition with the camera rotation matters)."""
    return two_person_fit(F, seed, spread=0.4, transl=((-0.4, 0.1, 1.0), (0.4, -0.2, 0.9)), betas_scale=1.5)


def _mesh(fast: FastBody, go, bp, betas, tr):
    v, _ = fast.vertices(go.reshape(-1, 3).double(), bp.reshape(-1, 69).double(), betas.reshape(-1, betas.shape[-1]).double(),
                         tr.reshape(-1, 3).double())
    return v


def test_smpl_to_cameras_gives_the_transformed_mesh(body):
    """Posing the model with the camera-frame parameters gives the world mesh mapped by [R | t], in
    float64 to 1e-7 m. The transform is exact; what is left is the rotation's matrix -> axis-angle
    -> matrix round trip (measured 3.1e-9 m at 5 m from the camera), so 1e-7 m is 30x that and
    still 1e5 times below the 1 cm a wrong pivot gives."""
    res = _result(F=2)
    cams = ring_cameras(4)
    fast = FastBody(body).to(dtype=torch.float64)
    betas = res.betas.double()[None].expand(2, 2, -1)
    pelvis = fast.rest_joints(res.betas.double())[:, 0]  # [P, 3]
    go_c, tr_c = smpl_to_cameras(res.global_orient.double(), res.transl.double(), pelvis, cams.R, cams.t)
    world = _mesh(fast, res.global_orient, res.body_pose, betas, res.transl).view(2, 2, -1, 3)
    for v in range(4):
        cam = _mesh(fast, go_c[v], res.body_pose, betas, tr_c[v]).view(2, 2, -1, 3)
        want = world @ cams.R[v].T + cams.t[v]
        assert float((cam - want).abs().max()) < 1e-7
    # a wrong pivot (rotating about the origin instead of the pelvis) is visibly off: the test can fail
    bad = cams.R[0] @ res.transl[0, 0].double() + cams.t[0]
    assert float((bad - tr_c[0, 0, 0]).norm()) > 0.01


def test_export_camera_frame_files_project_like_the_world_mesh(body, tmp_path):
    res = _result(F=3)
    cams = ring_cameras(3, model="fisheye")
    export_harmony4d(tmp_path, res, body, [1, 2, 3], NAMES, cameras=cams)
    z = npz_members(tmp_path / "sequence.npz")
    assert z["cam_global_orient"].shape == (3, 3, 2, 3) and z["cam_transl"].shape == (3, 3, 2, 3)
    np.testing.assert_allclose(z["world_to_camera"][:, :3, :3], cams.R.numpy(), atol=1e-6)
    np.testing.assert_allclose(z["world_to_camera"][:, :3, 3], cams.t.numpy(), atol=1e-6)
    assert "metric" in str(z["scale_convention"][0])
    fast = FastBody(body).to(dtype=torch.float64)
    for v, cam in enumerate(cams.names):
        d = read_npy(tmp_path / "smpl_cam" / cam / "00002.npy")
        assert sorted(d) == NAMES
        e = d["aria02"]
        assert e["body_model_gender"] == body.gender and e["body_model_num_betas"] == body.num_betas == e["betas"].shape[0]
        np.testing.assert_allclose(e["world_to_camera"], z["world_to_camera"][v], atol=0)
        # the camera-frame mesh, projected by the camera's intrinsics alone (identity extrinsics),
        # lands where the world mesh projects. Measured: 4.1e-5 px and 2.3e-7 m at most (the file's
        # float32 parameters); margins 1e-3 px and 2e-6 m, ~10-25x that, far below a visible error
        vc = _mesh(fast, torch.from_numpy(e["global_orient"]), torch.from_numpy(e["body_pose"]), torch.from_numpy(e["betas"])[None],
                   torch.from_numpy(e["transl"]))[0]
        vw = _mesh(fast, res.global_orient[1, 1], res.body_pose[1, 1], res.betas[1][None], res.transl[1, 1])[0]
        one = cams.subset([v])
        local = CameraSet([cam], one.model, one.intrinsics, one.dist, torch.eye(3, dtype=one.dtype)[None], torch.zeros(1, 3, dtype=one.dtype), one.size)
        uv_c, _ = local.project(vc)
        uv_w, _ = one.project(vw)
        assert float((uv_c - uv_w).abs().max()) < 1e-3
        np.testing.assert_allclose(vc.numpy(), (vw @ one.R[0].T + one.t[0]).numpy(), atol=2e-6)


def test_export_carries_the_body_model_identity(body, tmp_path):
    """The identity in the files names the very model file whose forward pass reproduces the
    shipped vertices (float32 storage: 1e-5 m)."""
    res = _result(F=2, seed=4)
    export_harmony4d(tmp_path, res, body, [1, 2], NAMES, cameras=ring_cameras(2))
    z = npz_members(tmp_path / "sequence.npz")
    ident = body_model_identity(body)
    assert str(z["body_model_sha256"].reshape(-1)[0]) == hashlib.sha256(body.path.read_bytes()).hexdigest() == ident["sha256"]
    assert str(z["body_model_gender"].reshape(-1)[0]) == body.gender
    assert int(z["body_model_num_betas"]) == z["betas"].shape[-1] == body.num_betas
    assert int(z["body_model_num_vertices"]) == z["vertices"].shape[2]
    again = load_body_model(body.path, gender=str(z["body_model_gender"].reshape(-1)[0]))  # the file the identity names
    v, _ = again.forward(torch.from_numpy(np.array(z["global_orient"][1])), torch.from_numpy(np.array(z["body_pose"][1])),
                         torch.from_numpy(np.array(z["betas"][1])), torch.from_numpy(np.array(z["transl"][1])))
    np.testing.assert_allclose(v.detach().numpy(), z["vertices"][1], atol=1e-5)


def test_smpl_frame_files_carry_the_identity_and_reproduce_their_vertices(body, tmp_path):
    """smpl/%05d.npy names its body model (sha256, gender, number of betas) like smpl_cam/ and
    sequence.npz, and that model posed with the file's own parameters gives the file's vertices
    (float32 storage: 1e-5 m); the layout's reader still reads the files."""
    from h4d_fast.io.smpl_layout import read_smpl_sequence

    res = _result(F=2, seed=5)
    export_harmony4d(tmp_path, res, body, [1, 2], NAMES, cameras=ring_cameras(2))
    ident = body_model_identity(body)
    for name in ("00001.npy", "00002.npy"):
        d = read_npy(tmp_path / "smpl" / name)
        assert sorted(d) == NAMES
        for n in NAMES:
            e = d[n]
            assert e["body_model_sha256"] == ident["sha256"] == hashlib.sha256(body.path.read_bytes()).hexdigest()
            assert e["body_model_gender"] == body.gender and e["body_model_num_betas"] == body.num_betas == e["betas"].shape[0]
            again = load_body_model(body.path, gender=e["body_model_gender"])
            v, _ = again.forward(*(torch.from_numpy(e[k])[None] for k in ("global_orient", "body_pose", "betas", "transl")))
            np.testing.assert_allclose(v[0].detach().numpy(), e["vertices"], atol=1e-5)
            # other betas would not reproduce them: the comparison can fail
            v2, _ = again.forward(torch.from_numpy(e["global_orient"])[None], torch.from_numpy(e["body_pose"])[None],
                                  torch.from_numpy(e["betas"])[None] + 0.5, torch.from_numpy(e["transl"])[None])
            assert float(np.abs(v2[0].detach().numpy() - e["vertices"]).max()) > 1e-3
    back = read_smpl_sequence(tmp_path, prefer="files")
    np.testing.assert_allclose(back["betas"][0], res.betas.numpy(), atol=1e-6)
