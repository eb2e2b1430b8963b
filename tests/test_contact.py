"""Vertex contact (ops.contact) and its scores (eval.metrics), the body-part segmentation (body.parts) and contact files (io.contact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from h4d_fast.body.parts import PART_NAMES, PART_OF_JOINT, BodyParts, body_parts, segment_vertices
from h4d_fast.constants import SMPL_JOINT_NAMES
from h4d_fast.errors import InputError
from h4d_fast.eval.metrics import contact_scores
from h4d_fast.io.contact import contact_frame_dict, read_contact, write_contact
from h4d_fast.ops import penetration as _mesh
from h4d_fast.ops.contact import pair_contact, person_pairs, surface_query, vertex_contact
from h4d_fast.ops.mesh_geometry import _topology


def icosphere(subdiv: int = 3, radius: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed, outward-oriented icosphere: ``verts [N, 3]`` float64, ``faces [T, 3]``."""
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
         [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    verts = [np.asarray(p, float) / np.linalg.norm(p) for p in v]
    for _ in range(subdiv):
        cache: dict = {}

        def mid(a: int, b: int) -> int:
            k = (min(a, b), max(a, b))
            if k not in cache:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                cache[k] = len(verts) - 1
            return cache[k]

        nf = []
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            nf += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = nf
    return torch.tensor(np.asarray(verts) * radius), torch.tensor(f)


SPH_V, SPH_F = icosphere(3, 0.1)  # 642 vertices, 1280 faces


def two_spheres(gaps: list[float], sphere: torch.Tensor = SPH_V) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of two spheres (radius 0.1) whose surfaces are ``gap`` apart along x (negative = overlap)."""
    a = torch.stack([sphere for _ in gaps])
    b = torch.stack([sphere + torch.tensor([0.2 + g, 0.01 * i, 0.0], dtype=torch.float64) for i, g in enumerate(gaps)])
    return a, b


def brute_force(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact distance to the surface (all triangles) and inside flag (winding number)."""
    return _mesh._depth_exact(points, verts, faces)


SMALL_V, SMALL_F = icosphere(2, 0.1)  # 162 vertices: for the brute-force comparisons


def test_surface_query_matches_brute_force():
    band = 0.01
    a, b = two_spheres([-0.03, -0.004, 0.004, 0.012, 0.3], SMALL_V)
    q = surface_query(a, b, SMALL_F, band)
    for f in range(a.shape[0]):
        d, ins = brute_force(a[f], b[f], SMALL_F)
        truth = ins | (d <= band)
        got = q.inside[f] | (q.dist[f] <= band)
        assert torch.equal(got, truth), f
        fin = torch.isfinite(q.dist[f])
        torch.testing.assert_close(q.dist[f][fin], d[fin], atol=1e-12, rtol=0)
        assert torch.equal(q.inside[f][fin], ins[fin])
        assert not bool((truth & ~fin).any())  # nothing within reach was skipped
        # the benchmark's depth: nearest vertex of the other sphere, for the inside vertices only
        vd = torch.cdist(a[f], b[f]).amin(-1)
        torch.testing.assert_close(q.vertex_dist[f], torch.where(ins, vd, torch.zeros_like(vd)), atol=1e-12, rtol=0)
    # the overlapping frame has vertices inside, the far frame none
    assert bool(q.inside[0].any()) and not bool(torch.isfinite(q.dist[4]).any())


def test_grid_kernel_deep_inside_and_far_outside():
    """The CPU grid kernel on a small sphere deep inside a big one (its grids cover the small
    sphere's box grown by 5 cm, so the big sphere's surface 9 cm away is found by the fallback
    search) and on points beside it: exact distances, inside flags and vertex depths (oracle: every
    triangle, every vertex)."""
    from h4d_fast.ops._contact_numba import query_frames

    big = SMALL_V * 3.0  # radius 0.3
    small = SMALL_V * 0.2 + torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)  # radius 0.02, centred near the middle
    beside = SMALL_V * 0.2 + torch.tensor([0.305, 0.0, 0.0], dtype=torch.float64)  # straddles the big surface
    pts = torch.stack([small, beside])
    d, ins, vd = query_frames(pts.numpy(), torch.stack([big, big]).numpy(), SMALL_F.numpy(), 0.01)
    for f in range(2):
        dt, it = brute_force(pts[f], big, SMALL_F)
        assert np.array_equal(ins[f], it.numpy()), f
        want = np.where(it.numpy() | (dt.numpy() <= 0.01), dt.numpy(), np.inf)
        got = np.where(ins[f] | (d[f] <= 0.01), d[f], np.inf)
        np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)
        vd_t = torch.cdist(pts[f], big).amin(-1)
        np.testing.assert_allclose(vd[f], np.where(it.numpy(), vd_t.numpy(), 0.0), atol=1e-12, rtol=0)
    assert ins[0].all() and float(d[0].min()) > 0.2  # deep: far beyond the grids' 5 cm margin
    assert ins[1].any() and not ins[1].all()
    # with the closest points: the same figures, and each closest point lies at the reported distance
    d2, ins2, vd2, tri, st = query_frames(pts.numpy(), torch.stack([big, big]).numpy(), SMALL_F.numpy(), 0.01, closest=True)
    assert np.array_equal(d2, d) and np.array_equal(ins2, ins) and np.array_equal(vd2, vd)
    fin = np.isfinite(d)
    assert np.array_equal(tri >= 0, fin) and fin[1].any()
    f_, m_ = np.nonzero(fin)
    a, b, c = (big.numpy()[SMALL_F.numpy()[tri[f_, m_], k]] for k in range(3))
    q = a + st[f_, m_, :1] * (b - a) + st[f_, m_, 1:] * (c - a)
    np.testing.assert_allclose(np.linalg.norm(pts.numpy()[f_, m_] - q, axis=-1), d[f_, m_], atol=1e-12, rtol=0)


def test_surface_query_without_numba_matches(monkeypatch):
    """The torch fallback (no numba) gives the same labels and depths as the numba path."""
    a, b = two_spheres([-0.03, -0.004, 0.004, 0.012])
    q = surface_query(a, b, SPH_F, 0.01)
    monkeypatch.setattr(_mesh, "_numba_depth", lambda: None)
    t = surface_query(a, b, SPH_F, 0.01)
    assert torch.equal(q.inside | (q.dist <= 0.01), t.inside | (t.dist <= 0.01))
    torch.testing.assert_close(t.vertex_dist, q.vertex_dist, atol=1e-12, rtol=0)


def test_batched_query_matches_numba_path():
    """The frames-batched query (the GPU path) run on CPU tensors gives the numba path's labels."""
    from h4d_fast.ops import contact as C

    a, b = two_spheres([-0.03, -0.004, 0.004, 0.012, 0.3])
    q = surface_query(a, b, SPH_F, 0.01)
    lo, hi = b.amin(1), b.amax(1)
    cand = ((a >= lo[:, None] - 0.01) & (a <= hi[:, None] + 0.01)).all(-1)
    out = C.SurfaceQuery(torch.full(cand.shape, float("inf"), dtype=a.dtype), torch.zeros(cand.shape, dtype=torch.bool), torch.zeros(cand.shape, dtype=a.dtype))
    need = C._gpu_needed(a, b, SPH_F, cand, 0.01)
    assert bool((need <= cand).all())
    C._query_gpu(a, b, _topology(SPH_F, b.shape[1]), need, 8, out)
    assert torch.equal(q.inside | (q.dist <= 0.01), out.inside | (out.dist <= 0.01))
    torch.testing.assert_close(out.vertex_dist, q.vertex_dist, atol=1e-12, rtol=0)


def test_pair_contact_both_directions_and_far_frames():
    a, b = two_spheres([-0.02, 0.005, 0.5])
    pc = pair_contact(a, b, SPH_F, contact_mm=10.0)
    c = pc.contact
    assert c.shape == (3, 2, SPH_V.shape[0])
    assert bool(c[0, 0].any()) and bool(c[0, 1].any()) and bool(c[1].any()) and not bool(c[2].any())
    # symmetric set-up: as many of a's vertices touch b as b's touch a
    assert int(c[0, 0].sum()) == int(c[0, 1].sum())
    # penetration depth of the overlapping frame: ~ the 2 cm overlap (nearest-vertex distance, mesh-resolution error)
    md = pc.max_vertex_depth()
    assert float(md[0]) == pytest.approx(0.02, abs=0.006) and float(md[1]) == 0.0 and float(md[2]) == 0.0
    # a larger threshold only adds vertices
    c20 = pair_contact(a, b, SPH_F, contact_mm=20.0).contact
    assert bool((c20 | ~c).all()) and int(c20.sum()) > int(c.sum())
    with pytest.raises(ValueError):
        pair_contact(a, b, SPH_F, contact_mm=-1.0)


def test_vertex_contact_pairs():
    a, b = two_spheres([-0.01, 0.02])
    c = torch.stack([SPH_V + torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)] * 2)  # a third person, far away
    verts = torch.stack([a, b, c], 1)  # [F, 3, N, 3]
    labels, pairs = vertex_contact(verts, SPH_F)
    assert pairs == person_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    assert labels.shape == (2, 3, 2, SPH_V.shape[0])
    assert torch.equal(labels[:, 0], pair_contact(a, b, SPH_F).contact)
    assert not bool(labels[:, 1:].any()) and not bool(labels[1].any())


def test_contact_scores():
    p = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    g = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    s = contact_scores(p, g)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(2 / 3)
    z = torch.zeros(4, dtype=torch.bool)
    assert contact_scores(z, z)["f1"] == 1.0  # nothing to find, nothing found
    assert contact_scores(z, ~z)["f1"] == 0.0
    with pytest.raises(ValueError):
        contact_scores(z, torch.zeros(3, dtype=torch.bool))


# ----------------------------------------------------------------------------- segmentation
def test_segment_vertices_follows_the_most_weighted_joint():
    J = len(SMPL_JOINT_NAMES)
    w = torch.full((J * 2, J), 0.01)
    for j in range(J):
        w[2 * j, j] = 0.9  # vertex 2j belongs to joint j
        w[2 * j + 1, j] = 0.5
        w[2 * j + 1, (j + 1) % J] = 0.49
    vp = segment_vertices(w)
    for j, name in enumerate(SMPL_JOINT_NAMES):
        assert PART_NAMES[int(vp[2 * j])] == PART_OF_JOINT[name]
        assert PART_NAMES[int(vp[2 * j + 1])] == PART_OF_JOINT[name]
    with pytest.raises(ValueError):
        segment_vertices(torch.ones(5, 10))
    assert set(PART_OF_JOINT) == set(SMPL_JOINT_NAMES) and set(PART_OF_JOINT.values()) == set(PART_NAMES)


def test_body_parts_regions():
    parts = BodyParts(("a", "b", "c"), torch.tensor([0, 0, 1, 2, 2]))
    m = torch.tensor([[False, True, False, False, False], [False, False, False, True, True]])
    assert parts.regions(m).tolist() == [[True, False, False], [False, False, True]]
    assert parts.region_names(m[1]) == ["c"]
    with pytest.raises(ValueError):
        parts.regions(torch.zeros(4, dtype=torch.bool))


@pytest.fixture(scope="module")
def default_body():
    pytest.importorskip("smplx")
    from h4d_fast.body import DefaultModelUnavailable, load_body_model

    try:
        return load_body_model()
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(str(e))


def test_default_body_segmentation(default_body):
    parts = body_parts(default_body)
    vp = parts.vertex_part
    assert vp.shape == (default_body.num_vertices,)
    counts = torch.bincount(vp, minlength=len(PART_NAMES))
    assert bool((counts > 0).all()), dict(zip(PART_NAMES, counts.tolist()))
    v = default_body.smpl.v_template.detach().double()
    mean = {n: v[vp == i].mean(0) for i, n in enumerate(PART_NAMES)}
    # left and right mirror each other: equal counts within 5% and opposite sides in x (SMPL: +x = left)
    for side in ("upper_arm", "forearm", "hand", "thigh", "lower_leg", "foot"):
        nl, nr = int(counts[PART_NAMES.index("left_" + side)]), int(counts[PART_NAMES.index("right_" + side)])
        assert abs(nl - nr) <= 0.05 * max(nl, nr), side
        assert float(mean["left_" + side][0]) > 0 > float(mean["right_" + side][0]), side
    # head above chest above hips above feet along the model's up axis (y)
    assert float(mean["head"][1]) > float(mean["chest"][1]) > float(mean["hips"][1]) > float(mean["left_foot"][1])


def test_default_body_contact_culls_nothing_in_reach(default_body):
    """Two default bodies, one shifted so that they overlap at the arm: the culls of the numba path
    drop no vertex in reach (oracle: the mesh module's search run on every candidate, no cull)."""
    v = default_body.smpl.v_template.detach().double()[None]
    faces = default_body.faces
    b = v + torch.tensor([0.45, 0.0, 0.04], dtype=torch.float64)  # the left hand of one meets the other's right arm
    q = surface_query(v, b, faces, 0.01)
    lo, hi = b[0].amin(0) - 0.01, b[0].amax(0) + 0.01
    box = ((v[0] >= lo) & (v[0] <= hi)).all(-1)
    idx = box.nonzero()[:, 0]
    d, ins = _mesh._depth_fast(v[0, idx], b[0], _topology(faces, b.shape[1]), 8)
    truth = ins | (d <= 0.01)
    got = q.inside[0, idx] | (q.dist[0, idx] <= 0.01)
    assert int(truth.sum()) > 20  # the set-up does touch
    assert torch.equal(got, truth)
    # the GPU path's coarse cull (run here on CPU tensors) drops most box candidates and no contact
    from h4d_fast.ops import contact as C

    need = C._gpu_needed(v, b, faces, box[None], 0.01)
    assert int(need.sum()) < 0.5 * int(box.sum())
    out = C.SurfaceQuery(torch.full(box[None].shape, float("inf"), dtype=v.dtype), torch.zeros(box[None].shape, dtype=torch.bool),
                         torch.zeros(box[None].shape, dtype=v.dtype))
    C._query_gpu(v, b, _topology(faces, b.shape[1]), need, 8, out)
    assert torch.equal((out.inside | (out.dist <= 0.01))[0, idx], truth)


# ----------------------------------------------------------------------------- files
def test_contact_file_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    c = torch.rand(4, 1, 2, 50, generator=g) < 0.1
    vp = torch.randint(0, 3, (50,), generator=g)
    p = write_contact(tmp_path / "gt" / "contact.npz", c, [(0, 1)], [5, 6, 7, 8], 10.0, ("a", "b", "c"), vp)
    lab = read_contact(p)
    assert torch.equal(lab.contact, c) and lab.pairs == [(0, 1)] and lab.frame_ids == [5, 6, 7, 8] and lab.contact_mm == 10.0
    assert lab.part_names == ("a", "b", "c") and torch.equal(lab.vertex_part, vp)
    parts = BodyParts(("a", "b", "c"), vp)
    d = contact_frame_dict(c, 2, [(0, 1)], ["aria01", "aria02"], parts.regions(c), parts.names)
    assert set(d) == {"aria01-aria02"} and d["aria01-aria02"]["contact"].shape == (2, 50)
    assert d["aria01-aria02"]["regions"][0] == parts.region_names(c[2, 0, 0])
    assert lab.depth_max is None and lab.depth_mean is None
    dm = torch.rand(4, 1, 2, generator=g, dtype=torch.float64) * 0.02
    lab = read_contact(write_contact(tmp_path / "run.npz", c, [(0, 1)], [5, 6, 7, 8], 10.0, depth_max=dm, depth_mean=dm / 2))
    torch.testing.assert_close(lab.depth_max, dm.float().double())
    torch.testing.assert_close(lab.depth_mean, (dm / 2).float().double())


def test_contact_file_bad_input(tmp_path):
    p = tmp_path / "contact.npz"
    np.savez(p, contact_index=np.array([[0, 0, 0, 99]], np.int32), shape=np.array([1, 1, 2, 10]), pairs=np.array([[0, 1]]),
             frame_ids=np.array([1]), contact_mm=np.array(10.0))
    with pytest.raises(InputError, match="contact_index"):
        read_contact(p)
    np.savez(p, shape=np.array([1, 1, 2, 10]))
    with pytest.raises(InputError, match="contact_index"):
        read_contact(p)
    ok = dict(contact_index=np.zeros((0, 4), np.int32), shape=np.array([1, 1, 2, 10]), pairs=np.array([[0, 1]]),
              frame_ids=np.array([1]), contact_mm=np.array(10.0))
    np.savez(p, **ok, depth_max=np.full((1, 1, 2), -1.0, np.float32))
    with pytest.raises(InputError, match="depth_max"):
        read_contact(p)
    np.savez(p, **ok, depth_mean=np.zeros((2, 1, 2), np.float32))
    with pytest.raises(InputError, match="depth_mean"):
        read_contact(p)
    p.write_bytes(b"not an npz")
    with pytest.raises(InputError, match="readable"):
        read_contact(p)


@pytest.mark.gpu
def test_surface_query_gpu_matches_cpu():
    a, b = two_spheres([-0.03, -0.004, 0.004, 0.012, 0.3])
    qc = surface_query(a, b, SPH_F, 0.01)
    qg = surface_query(a.cuda(), b.cuda(), SPH_F.cuda(), 0.01)
    cc = qc.inside | (qc.dist <= 0.01)
    cg = (qg.inside | (qg.dist <= 0.01)).cpu()
    assert torch.equal(cc, cg)
    torch.testing.assert_close(qg.vertex_dist.cpu(), qc.vertex_dist, atol=1e-9, rtol=0)
    pc = pair_contact(a.cuda().float(), b.cuda().float(), SPH_F.cuda())
    assert pc.contact.is_cuda and math.isfinite(float(pc.max_vertex_depth().max()))


def test_export_and_ground_truth_contact(default_body, tmp_path):
    """The export's arrays from ground-truth parameters: two default bodies placed into each other's reach."""
    from h4d_fast.ops.contact import export_contact
    from h4d_fast.synth.contact import ground_truth_contact

    F, P = 2, 2
    params = {"global_orient": torch.zeros(F, P, 3), "body_pose": torch.zeros(F, P, 69), "betas": torch.zeros(P, 10),
              "transl": torch.tensor([[[0.0, 0, 0], [0.45, 0, 0.04]], [[0.0, 0, 0], [2.0, 0, 0]]])}
    c = ground_truth_contact(params, default_body)
    parts = body_parts(default_body)
    N = default_body.num_vertices
    assert c["contact"].shape == (F, 1, 2, N) and c["contact_pairs"].tolist() == [[0, 1]] and float(c["contact_mm"]) == 10.0
    assert c["contact"][0].any() and not c["contact"][1].any()  # touching, then 2 m apart
    assert c["contact_regions"].shape == (F, 1, 2, len(parts.names)) and list(c["part_names"]) == list(parts.names)
    hands = [parts.names.index(n) for n in ("left_hand", "right_hand", "left_forearm", "right_forearm", "left_upper_arm", "right_upper_arm")]
    assert c["contact_regions"][0, 0, :, hands].any()  # arms / hands meet
    # written and read back as the synthetic ground truth would be
    p = write_contact(tmp_path / "contact.npz", torch.as_tensor(c["contact"]), [(0, 1)], [1, 2], 10.0, parts.names, parts.vertex_part)
    assert torch.equal(read_contact(p).contact, torch.as_tensor(c["contact"]))
    v = torch.zeros(1, 2, N, 3)
    assert export_contact(v, default_body.faces)["contact"].shape == (1, 1, 2, N)
