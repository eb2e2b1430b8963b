"""Contact labels in the Harmony4D export (issue 15, item 1): sequence.npz, contact.npz and
contact/%05d.npy, people absent from a frame left out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body.fast import FastBody  # noqa: E402
from h4d_fast.body.parts import body_parts  # noqa: E402
from h4d_fast.io.contact import dense_contact, read_contact  # noqa: E402
from h4d_fast.io.detections import read_npy  # noqa: E402
from h4d_fast.io.frame_files import npz_members  # noqa: E402
from h4d_fast.ops.contact import vertex_contact  # noqa: E402
from h4d_fast.pipeline.export import export_harmony4d  # noqa: E402
from h4d_fast.pipeline.fit import FitResult  # noqa: E402
from helpers import body_model_or_skip  # noqa: E402

NAMES = ["aria01", "aria02", "aria03"]


@pytest.fixture(scope="module")
def body():
    return body_model_or_skip()


def _touching(F: int = 3) -> FitResult:
    """Three upright people: 0 and 1 a hand's width apart and closing in (0.30, 0.26, 0.22 m
    between pelvises, arms out: they touch), 2 two metres away (touches nobody)."""
    g = torch.Generator().manual_seed(1)
    go = torch.zeros(F, 3, 3)
    go[..., 0] = math.pi / 2
    bp = 0.05 * torch.randn(F, 3, 69, generator=g)
    tr = torch.zeros(F, 3, 3)
    tr[..., 2] = 1.0
    for f in range(F):
        half = (0.30 - 0.04 * f) / 2
        tr[f, 0, 0], tr[f, 1, 0], tr[f, 2, 0] = -half, half, 2.0
    return FitResult(go, bp, torch.zeros(3, 10), tr)


def test_export_writes_contact_of_present_pairs(body, tmp_path):
    res = _touching()
    present = np.array([[True, True, True], [True, False, True], [True, True, True]])
    st = export_harmony4d(tmp_path, res, body, [4, 5, 6], NAMES, present=present, contact_mm=10.0)
    verts, _ = FastBody(body).vertices(res.global_orient.reshape(-1, 3), res.body_pose.reshape(-1, 69),
                                       res.betas.repeat(3, 1), res.transl.reshape(-1, 3))
    want, pairs = vertex_contact(verts.view(3, 3, -1, 3), body.faces, 10.0)
    assert pairs == [(0, 1), (0, 2), (1, 2)]
    want = want.numpy()
    assert want[:, 0].any(-1).all() and not want[:, 1:].any()  # the fixture: 0 and 1 touch in every frame, 2 nobody
    want[1, 0] = False  # aria02 is absent from frame 5
    # sequence.npz: the sparse labels, the pairs, the threshold and the segmentation
    z = npz_members(tmp_path / "sequence.npz")
    np.testing.assert_array_equal(dense_contact(z), want)
    assert z["contact_pairs"].tolist() == [[0, 1], [0, 2], [1, 2]] and float(z["contact_mm"]) == 10.0
    parts = body_parts(body)
    np.testing.assert_array_equal(z["contact_regions"], parts.regions(torch.from_numpy(want)).numpy())
    # contact.npz: the same labels, readable with the ground truth's reader
    lab = read_contact(tmp_path / "contact.npz")
    np.testing.assert_array_equal(lab.contact.numpy(), want)
    assert lab.frame_ids == [4, 5, 6] and lab.pairs == [(0, 1), (0, 2), (1, 2)] and lab.part_names == parts.names
    # per frame: one entry per pair of present people
    assert sorted(p.name for p in (tmp_path / "contact").iterdir()) == ["00004.npy", "00005.npy", "00006.npy"]
    d4 = read_npy(tmp_path / "contact" / "00004.npy")
    assert sorted(d4) == ["aria01-aria02", "aria01-aria03", "aria02-aria03"]
    e = d4["aria01-aria02"]
    assert e["people"] == ["aria01", "aria02"] and e["contact"].dtype == bool and e["contact"].shape == (2, body.num_vertices)
    np.testing.assert_array_equal(e["contact"], want[0, 0])
    assert e["regions"][0] and set(e["regions"][0]) <= set(parts.names)  # a's touching parts, named
    assert not d4["aria01-aria03"]["contact"].any() and d4["aria01-aria03"]["regions"] == [[], []]
    assert sorted(read_npy(tmp_path / "contact" / "00005.npy")) == ["aria01-aria03"]  # aria02 absent
    np.testing.assert_array_equal(read_npy(tmp_path / "contact" / "00006.npy")["aria01-aria02"]["contact"], want[2, 0])
    assert st["files"] == 3 * 3 + 1 + 1  # smpl, poses3d, contact; sequence.npz, contact.npz


def test_export_without_contact_mm_or_with_one_person_writes_no_contact(body, tmp_path):
    res = _touching(F=2)
    export_harmony4d(tmp_path / "a", res, body, [1, 2], NAMES)
    assert not (tmp_path / "a" / "contact").exists() and not (tmp_path / "a" / "contact.npz").exists()
    assert "contact_index" not in npz_members(tmp_path / "a" / "sequence.npz")
    one = FitResult(res.global_orient[:, :1], res.body_pose[:, :1], res.betas[:1], res.transl[:, :1])
    export_harmony4d(tmp_path / "b", one, body, [1, 2], NAMES[:1], contact_mm=10.0)
    assert not (tmp_path / "b" / "contact").exists()


def test_export_contact_summary_path_matches_the_pair_queries(body):
    """The export's summary kernel (float32 vertices, no per-point distance arrays) gives the pair
    queries' labels and penetration depths (float64 path): same labels, depths within 1e-6 m."""
    from h4d_fast.ops.contact import depth_arrays, export_contact, pair_contact

    res = _touching()
    verts, _ = FastBody(body).vertices(res.global_orient.reshape(-1, 3), res.body_pose.reshape(-1, 69),
                                       res.betas.repeat(3, 1), res.transl.reshape(-1, 3))
    v = verts.view(3, 3, -1, 3).float()
    v[:, 1, :, 0] -= 0.02  # push person 1 into person 0: vertices inside, depths > 0
    exp = export_contact(v, body.faces, contact_mm=10.0)
    pcs = [pair_contact(v[:, a].double(), v[:, b].double(), body.faces, contact_mm=10.0) for a, b in [(0, 1), (0, 2), (1, 2)]]
    np.testing.assert_array_equal(exp["contact"], torch.stack([pc.contact for pc in pcs], 1).numpy())
    dmax, dmean = depth_arrays(pcs)
    assert float(dmax[:, 0].min()) > 0.005  # the set-up does penetrate
    np.testing.assert_allclose(exp["depth_max"], dmax.numpy(), atol=1e-6)
    np.testing.assert_allclose(exp["depth_mean"], dmean.numpy(), atol=1e-6)
    # the interpenetration per pair: the fit's measure (penetration_volume, "fast": nearest-vertex
    # triangles) from the same pass; measured 16,281.9 / 12,674.8 / 17,644.2 cm^3 for pair (0, 1)
    # against 16,281.7 / 12,674.8 / 17,644.2 (a vertex whose fast depth comes from another
    # triangle differs by its area times a fraction of a mm); rtol 1e-4 is five times that gap
    from h4d_fast.ops.penetration import penetration_volume

    assert exp["penetration_cm3"].shape == (3, 3)
    for q, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):
        want = penetration_volume(v[:, a].double(), v[:, b].double(), body.faces, backend="depth").numpy()
        np.testing.assert_allclose(exp["penetration_cm3"][:, q], want, rtol=1e-4, atol=1e-3)
    assert float(exp["penetration_cm3"][:, 0].min()) > 100 and not exp["penetration_cm3"][:, 1:].any()


@pytest.mark.gpu
def test_export_contact_of_cuda_meshes_is_the_host_kernels(body):
    """Meshes on the GPU: the export's labels and depths are the exact host kernel's
    (:func:`h4d_fast.ops.contact.contact_on_host`), the same as for the CPU copy."""
    from h4d_fast.ops.contact import contact_on_host, export_contact

    if not contact_on_host():
        pytest.skip("numba is not installed: the export's contact runs on the device")
    res = _touching()
    verts, _ = FastBody(body).vertices(res.global_orient.reshape(-1, 3), res.body_pose.reshape(-1, 69),
                                       res.betas.repeat(3, 1), res.transl.reshape(-1, 3))
    v = verts.view(3, 3, -1, 3).float()
    v[:, 1, :, 0] -= 0.02
    cpu = export_contact(v, body.faces, contact_mm=10.0)
    gpu = export_contact(v.cuda(), body.faces.cuda(), contact_mm=10.0)
    for k in ("contact", "depth_max", "depth_mean", "penetration_cm3"):
        np.testing.assert_array_equal(gpu[k], cpu[k])
