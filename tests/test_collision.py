"""Reference collision loss (h4d_fast.ops._collision_torch) and the public op's contract.

Meshes are built here: icospheres (convex, so exact inside tests and distances follow from the
face planes) and boxes (vertices on grid rows, the degenerate case of the ray parity).
"""

from __future__ import annotations

import math

import pytest
import torch

from h4d_fast.errors import BackendUnavailable
from h4d_fast.ops import _collision_torch as R
from h4d_fast.ops import collision_loss, sdf_grid


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tensors are tiny: intra-op threads only add contention (seconds on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# ----------------------------------------------------------------------------- mesh builders


def icosphere(level: int = 1, radius: float = 1.0, center=(0.0, 0.0, 0.0), dtype=torch.float64):
    """``verts [V, 3]``, ``faces [F, 3]`` (outward, counter-clockwise) of a subdivided icosahedron."""
    t = (1 + 5**0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
         [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]  # fmt: skip
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
         [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
         [8, 6, 7], [9, 8, 1]]  # fmt: skip
    verts = [[c / math.sqrt(sum(x * x for x in p)) for c in p] for p in v]
    for _ in range(level):
        mids: dict = {}

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in mids:
                p = [(verts[a][i] + verts[b][i]) / 2 for i in range(3)]
                n = math.sqrt(sum(x * x for x in p))
                verts.append([x / n for x in p])
                mids[key] = len(verts) - 1
            return mids[key]

        f = [g for a, b, c in f for g in ([a, mid(a, b), mid(c, a)], [b, mid(b, c), mid(a, b)],
                                          [c, mid(c, a), mid(b, c)], [mid(a, b), mid(b, c), mid(c, a)])]  # fmt: skip
    vt = torch.tensor(verts, dtype=dtype) * radius + torch.tensor(center, dtype=dtype)
    return vt, torch.tensor(f, dtype=torch.long)


def box_mesh(lo=(-0.5, -0.5, -0.5), hi=(0.5, 0.5, 0.5), dtype=torch.float64):
    """Axis-aligned box, 8 vertices, 12 outward triangles."""
    x = torch.tensor([[lo[0], lo[1], lo[2]], [hi[0], lo[1], lo[2]], [hi[0], hi[1], lo[2]], [lo[0], hi[1], lo[2]],
                      [lo[0], lo[1], hi[2]], [hi[0], lo[1], hi[2]], [hi[0], hi[1], hi[2]], [lo[0], hi[1], hi[2]]],
                     dtype=dtype)  # fmt: skip
    f = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [2, 3, 7], [2, 7, 6],
                      [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]])  # fmt: skip
    return x, f


def convex_inside_depth(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Signed depth of points in a convex mesh: min over faces of the distance to the face plane
    (> 0 inside). For an interior point this is exactly the distance to the surface."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    n = torch.cross(b - a, c - a, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True)
    return ((a[None] - points[:, None]) * n[None]).sum(-1).amin(-1)


def grid_points(G: int, cell_centers: str = "aligned", dtype=torch.float64) -> torch.Tensor:
    return R._grid_points(G, cell_centers, dtype, torch.device("cpu"))


def sphere_pair(B: int = 3, level: int = 1, depth: float = 0.15, seed: int = 0, dtype=torch.float64):
    """Sphere a (r=0.5 at 0) and an ellipsoid b overlapping it by about ``depth`` along x, jittered."""
    va, fa = icosphere(level, 0.5, dtype=dtype)
    vb, fb = icosphere(max(level - 1, 0), 1.0, dtype=dtype)
    vb = vb * torch.tensor([0.3, 0.35, 0.4], dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    ja = 0.03 * torch.randn(B, 1, 3, generator=g, dtype=dtype)
    jb = 0.03 * torch.randn(B, 1, 3, generator=g, dtype=dtype)
    shift = torch.tensor([0.5 + 0.3 - depth, 0.0, 0.0], dtype=dtype)
    return va[None] + ja, fa, vb[None] + shift + jb, fb


# ----------------------------------------------------------------------------- inside test


@pytest.mark.parametrize("cell_centers", ["aligned", "reference"])
def test_parity_inside_matches_convex_planes(cell_centers):
    v, f = icosphere(2, 0.7, center=(0.05, -0.1, 0.02))
    G = 20
    c, s, _ = R.box_normalization(v[None])
    tri = ((v - c) / s)[None][:, f]
    ins = R.inside_parity(tri, f, G, 0.5 if cell_centers == "reference" else 0.0)[0].reshape(-1)
    depth = convex_inside_depth(grid_points(G, cell_centers), (v - c[0]) / s[0], f)
    clear = depth.abs() > 1e-9
    assert clear.float().mean() > 0.99
    assert torch.equal(ins[clear], (depth > 0)[clear])
    assert ins.sum() > 50


def test_parity_is_watertight_on_grid_aligned_box():
    # box vertices and edges lie exactly on grid rows (and face diagonals pass through row centres):
    # every degenerate hit must count once, else the parity leaks along the whole row
    v, f = box_mesh()
    G = 9  # h = 1/4: grid coordinates -1, -0.75, ..., 1 are exact; the box maps to [-0.5, 0.5]^3 with pad 2
    phi, c, s = sdf_grid(v[None], f, G, pad=2.0)
    assert torch.equal(c, torch.zeros(1, 3, dtype=v.dtype)) and float(s) == 1.0
    p = grid_points(G)
    strictly_in = (p.abs() < 0.5 - 1e-12).all(-1)
    strictly_out = (p.abs() > 0.5 + 1e-12).any(-1)
    flat = phi.reshape(-1)
    assert (flat[strictly_in] > 0).all()
    assert (flat[strictly_out] == 0).all()
    # depth of interior points of a box: distance to the nearest face
    assert torch.allclose(flat[strictly_in], (0.5 - p[strictly_in].abs()).amin(-1))


@pytest.mark.parametrize("level", [0, 2])
def test_inside_modes_agree_on_generic_mesh(level):
    v, f = icosphere(level, 0.6)
    rot = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
    v = v @ rot.T + torch.tensor([0.1, 0.0, -0.05], dtype=torch.float64)
    G = 12
    grids = {m: sdf_grid(v[None], f, G, inside=m)[0] for m in ("parity", "reference", "winding")}
    assert torch.equal(grids["parity"] > 0, grids["winding"] > 0)
    assert torch.equal(grids["parity"] > 0, grids["reference"] > 0)
    assert torch.equal(grids["parity"], grids["winding"])


def test_parity_counts_self_intersections_mod_2():
    # two overlapping closed spheres in one mesh: parity makes the doubly covered lens "outside",
    # the winding number does not (documented difference)
    v1, f1 = icosphere(1, 0.5)
    v2, f2 = icosphere(1, 0.5, center=(0.4, 0.0, 0.0))
    v = torch.cat([v1, v2])
    f = torch.cat([f1, f2 + v1.shape[0]])
    G = 16
    par = sdf_grid(v[None], f, G, inside="parity")[0] > 0
    wn = sdf_grid(v[None], f, G, inside="winding")[0] > 0
    c, s, _ = R.box_normalization(v[None])
    world = grid_points(G) * s[0] + c[0]
    c2 = torch.tensor([0.4, 0.0, 0.0], dtype=v.dtype)
    lens = (world.norm(dim=-1) < 0.42) & ((world - c2).norm(dim=-1) < 0.42)  # well inside both spheres
    assert lens.any()
    assert not par.reshape(-1)[lens].any()
    assert wn.reshape(-1)[lens].all()


# ----------------------------------------------------------------------------- distance grid


@pytest.mark.parametrize("cell_centers", ["aligned", "reference"])
def test_sdf_grid_values_are_exact_distances(cell_centers):
    v, f = icosphere(2, 0.8, center=(0.0, 0.1, 0.0))
    G = 16
    phi, c, s = sdf_grid(v[None], f, G, cell_centers=cell_centers)
    depth = convex_inside_depth(grid_points(G, cell_centers), (v - c[0]) / s[0], f)
    expected = depth.clamp_min(0)
    assert torch.allclose(phi.reshape(-1), expected, atol=1e-12)
    assert phi.shape == (1, G, G, G)


@pytest.mark.parametrize("cell_centers", ["aligned", "reference"])
def test_signed_grid_is_the_signed_distance(cell_centers):
    # every grid point: |phi| = the distance to the surface (brute force), phi > 0 exactly where the
    # inside-only grid is positive (the same parity), and the positive part is the inside-only grid
    v, f = icosphere(2, 0.8, center=(0.0, 0.1, 0.0))
    G = 12
    phi, c, s = sdf_grid(v[None], f, G, cell_centers=cell_centers, field="signed")
    ins = sdf_grid(v[None], f, G, cell_centers=cell_centers)[0]
    pts = grid_points(G, cell_centers)
    tri = ((v - c[0]) / s[0])[f][None]
    dist = R.nearest_triangle_distance(pts, torch.zeros(pts.shape[0], dtype=torch.long), tri)
    torch.testing.assert_close(phi.reshape(-1).abs(), dist, rtol=0, atol=1e-12)
    assert torch.equal(phi > 0, ins > 0) and (phi < 0).sum() > 100
    torch.testing.assert_close(phi.clamp_min(0), ins, rtol=0, atol=0)


def _plate_and_probe(gap: float, dtype=torch.float64):
    """A flat box a (x in [-0.5, 0.5]) and a small icosphere b whose lowest x lies ``gap`` beyond
    a's +x face (``gap < 0``: |gap| inside), centred on the face, far from its edges."""
    va, fa = box_mesh((-0.5, -1.0, -1.0), (0.5, 1.0, 1.0), dtype=dtype)
    vb, fb = icosphere(1, 0.1, dtype=dtype)
    vb = vb - torch.tensor([float(vb[:, 0].min()) - 0.5 - gap, 0.0, 0.0], dtype=dtype)
    return va[None], fa, vb[None], fb


@pytest.mark.parametrize("gap", [0.004, 0.02])
def test_signed_field_does_not_bleed_out_of_the_body(gap):
    # b touches a's face from outside, a fraction of a cell away (cell = 2 * 1.2 / 15 = 0.16): the
    # inside-only grid's interpolation reads a's inside points, the signed field reads 0 -- until the
    # margin exceeds the gap
    va, fa, vb, fb = _plate_and_probe(gap)
    inside = collision_loss(va, vb, fa, fb, grid_size=16, backend="torch")
    signed = collision_loss(va, vb, fa, fb, grid_size=16, field="signed", backend="torch")
    assert float(inside) > 0 and float(signed) == 0.0
    assert float(collision_loss(va, vb, fa, fb, grid_size=16, field="signed", margin=2 * gap, backend="torch")) > 0
    assert float(collision_loss(va, vb, fa, fb, grid_size=16, field="signed", margin=0.5 * gap, backend="torch")) == 0.0


def test_taper_fades_the_inside_grids_bleed_out():
    # b 0.02 outside a's face (an eighth of a cell): the inside grid's bleed reaches it; a taper shorter
    # than the gap removes it, a longer one keeps part of it; b 0.03 inside: the vertices inside keep
    # the inside grid's full value (the signed sample there is > 0: weight 1)
    va, fa, vb, fb = _plate_and_probe(0.02)
    full = R.collision_terms_torch(va, vb, fa, fb, 16)[0][0]
    assert float(full.sum()) > 0
    assert float(R.collision_terms_torch(va, vb, fa, fb, 16, taper=0.015)[0][0].sum()) == 0.0
    part = R.collision_terms_torch(va, vb, fa, fb, 16, taper=0.1)[0][0]
    assert 0 < float(part.sum()) < float(full.sum()) and bool((part <= full + 1e-15).all())
    va, fa, vb, fb = _plate_and_probe(-0.03)
    full = R.collision_terms_torch(va, vb, fa, fb, 16)[0][0]
    tap = R.collision_terms_torch(va, vb, fa, fb, 16, taper=0.01)[0][0]
    inside = vb[0, :, 0] < 0.5
    torch.testing.assert_close(tap[inside], full[inside], rtol=0, atol=1e-15)
    assert float(tap[~inside].sum()) < float(full[~inside].sum())


def test_signed_field_reads_the_exact_depth_near_a_face():
    # near the middle of a box face the signed distance is linear, so the trilinear sample is exact:
    # each of b's vertices inside a costs its depth (normalised by a's box), plus the margin
    va, fa, vb, fb = _plate_and_probe(-0.03)
    s = 1.2 * 0.5 * 2.0  # a's box half size (pad 1.2, longest side 2)
    terms = R.collision_terms_torch(va, vb, fa, fb, 16, field="signed")[0][0]  # a's grid at b's vertices
    depth = (0.5 - vb[0, :, 0]).clamp_min(0)
    assert (depth > 0).sum() >= 5
    torch.testing.assert_close(terms, depth / s, rtol=0, atol=1e-12)
    m = 0.05  # (normalised 0.042: those vertices' cells still have an inside corner)
    with_m = R.collision_terms_torch(va, vb, fa, fb, 16, field="signed", margin=m)[0][0]
    # relu(signed distance + m): the vertices outside by more than m read 0 (their cells have no inside
    # corner, or the sample is below -m); those within m of the face outside count m minus their distance
    expected = (0.5 - vb[0, :, 0] + m).clamp_min(0) / s
    assert ((expected > 0) & (depth == 0)).any()
    torch.testing.assert_close(with_m, expected, rtol=0, atol=1e-12)


def test_exact_field_reads_each_vertex_exact_signed_distance():
    # a sphere probe half inside a sphere owner (curved: the trilinear sample is not exact there):
    # every vertex whose cell has an inside corner costs its own exact signed distance + margin
    va, fa = icosphere(2, 0.5)
    vb, fb = icosphere(1, 0.12, center=(0.5, 0.05, 0.02))
    m = 0.01
    s = 1.2 * 0.5 * float(va[:, 0].max() - va[:, 0].min())  # a's box half size (a sphere: the same along each axis)
    terms = R.collision_terms_torch(va[None], vb[None], fa, fb, 16, field="exact", margin=m)[0][0]
    tri = va[fa]
    d = R.point_triangle_dist2(vb[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]).amin(-1).sqrt()
    sd = torch.where(convex_inside_depth(vb, va, fa) > 0, d, -d)
    phi, c, half = sdf_grid(va[None], fa, 16)
    mask = R.any_corner_inside(phi, c, half, vb[None])[0]
    assert float(half[0]) == pytest.approx(s)
    torch.testing.assert_close(terms, torch.where(mask, (sd + m).clamp_min(0) / s, torch.zeros_like(sd)), rtol=0, atol=1e-12)
    assert int((terms > 0).sum()) >= 10 and bool(((sd > 0) <= mask).all())  # every inside vertex is seen here


def test_grid_layout_is_z_y_x():
    # a box elongated along x: phi[b, k, j, i] must vary along i like x
    v, f = box_mesh((-0.5, -0.2, -0.2), (0.5, 0.2, 0.2))
    G = 12
    phi = sdf_grid(v[None], f, G)[0][0]
    assert (phi > 0).sum(dim=(0, 1)).count_nonzero() > (phi > 0).sum(dim=(1, 2)).count_nonzero()


def test_reference_cell_centers_are_shifted_half_a_cell():
    v, f = icosphere(2, 0.8)
    G = 12
    a = sdf_grid(v[None], f, G, cell_centers="aligned")[0]
    r = sdf_grid(v[None], f, G, cell_centers="reference")[0]
    assert not torch.allclose(a, r)
    pts = grid_points(G, "reference")
    assert torch.allclose(pts - grid_points(G, "aligned"), torch.full_like(pts, 1.0 / (G - 1)))


# ----------------------------------------------------------------------------- the loss


def test_gradcheck_sampling():
    g = torch.Generator().manual_seed(0)
    G = 6
    phi = torch.rand(2, G, G, G, generator=g, dtype=torch.float64)
    center = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.1
    half = torch.tensor([0.9, 1.3], dtype=torch.float64)
    pts = (center[:, None] + 0.8 * (2 * torch.rand(2, 7, 3, generator=g, dtype=torch.float64) - 1) * half[:, None, None])
    pts.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: R.sample_phi(phi, center, half, p), (pts,), eps=1e-6, atol=1e-6)


def test_separated_bodies_give_exact_zero():
    va, fa = icosphere(1, 0.5)
    vb, fb = icosphere(1, 0.5, center=(1.2, 0.0, 0.0))
    a = va[None].repeat(2, 1, 1).requires_grad_(True)
    b = vb[None].repeat(2, 1, 1).requires_grad_(True)
    loss = collision_loss(a, b, fa, fb, grid_size=12, backend="torch")
    assert torch.equal(loss, torch.zeros(2, dtype=torch.float64))
    loss.sum().backward()
    assert torch.equal(a.grad, torch.zeros_like(a)) and torch.equal(b.grad, torch.zeros_like(b))


def test_overlap_is_positive_and_gradient_steps_reduce_it():
    va, fa, vb, fb = sphere_pair(B=2, depth=0.2)
    a, b = va.clone().requires_grad_(True), vb.clone().requires_grad_(True)
    opt = torch.optim.SGD([a, b], lr=0.5)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = collision_loss(a, b, fa, fb, grid_size=12, backend="torch")
        losses.append(loss.detach())
        loss.sum().backward()
        opt.step()
    assert (losses[0] > 0).all()
    assert (losses[-1] < 0.7 * losses[0]).all()
    # the gradient pushes the sampled vertices apart (b's centroid moves away from a along +x)
    assert (b.detach().mean(1)[:, 0] > vb.mean(1)[:, 0]).all()


def test_symmetric_under_swapping_people():
    va, fa, vb, fb = sphere_pair(B=3, depth=0.2)
    l1 = collision_loss(va, vb, fa, fb, grid_size=12, backend="torch")
    l2 = collision_loss(vb, va, fb, fa, grid_size=12, backend="torch")
    assert (l1 > 0).all()
    assert torch.allclose(l1, l2, rtol=1e-12, atol=0)


def test_known_value_sphere_in_sphere():
    # b (r = 0.4) at the centre of a (R = 1): phi_a at b's vertices ~ (R - r) / s_a, s_a = 1.2 R;
    # b's grid is 0 at a's vertices (outside b)
    va, fa = icosphere(2, 1.0)
    vb, fb = icosphere(1, 0.4)
    G = 24
    loss = collision_loss(va[None], vb[None], fa, fb, grid_size=G, backend="torch")
    _, s, _ = R.box_normalization(va[None])
    exact = convex_inside_depth(vb / s[0], va / s[0], fa).mean()  # the polyhedron's true depth at b's vertices
    h = 2.0 / (G - 1)
    # the depth of a convex polyhedron is concave, so its trilinear interpolation lies below it
    # (Jensen) and within a fraction of a cell
    assert float(exact) - 0.2 * h < float(loss) <= float(exact) + 1e-12
    assert float(loss) == pytest.approx((1.0 - 0.4) / 1.2, rel=0.05)  # the sphere formula, up to faceting
    parts = R.collision_terms_torch(va[None], vb[None], fa, fb, G)
    assert torch.equal(parts[1], torch.zeros_like(parts[1]))


def test_normalize_sum_and_reductions():
    va, fa, vb, fb = sphere_pair(B=3)
    mean = collision_loss(va, vb, fa, fb, grid_size=10, backend="torch")
    ta, tb, _ = R.collision_terms_torch(va, vb, fa, fb, 10)
    assert torch.allclose(mean, ta.mean(1) + tb.mean(1))
    total = collision_loss(va, vb, fa, fb, grid_size=10, normalize="sum", backend="torch")
    assert torch.allclose(total, ta.sum(1) + tb.sum(1))
    assert torch.allclose(collision_loss(va, vb, fa, fb, 10, "mean", backend="torch"), mean.mean())
    assert torch.allclose(collision_loss(va, vb, fa, fb, 10, "sum", backend="torch"), mean.sum())


def test_non_finite_frames_give_zero_and_zero_grad():
    va, fa, vb, fb = sphere_pair(B=3, depth=0.2)
    ref = collision_loss(va, vb, fa, fb, grid_size=10, backend="torch")
    va2, vb2 = va.clone(), vb.clone()
    va2[1, 3, 0] = float("nan")
    vb2[2, 0, 2] = float("inf")
    a, b = va2.requires_grad_(True), vb2.requires_grad_(True)
    loss = collision_loss(a, b, fa, fb, grid_size=10, backend="torch")
    assert torch.equal(loss[1:], torch.zeros(2, dtype=loss.dtype))
    assert torch.allclose(loss[0], ref[0])
    loss.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert torch.equal(a.grad[1:], torch.zeros_like(a.grad[1:])) and torch.equal(b.grad[1:], torch.zeros_like(b.grad[1:]))


def test_zero_frames():
    va, fa = icosphere(0)
    a = va[None][:0].clone().requires_grad_(True)
    loss = collision_loss(a, a, fa, grid_size=8)
    assert loss.shape == (0,)
    loss.sum().backward()
    assert a.grad.shape == a.shape
    assert collision_loss(a, a, fa, reduction="mean").item() == 0.0


def test_faces_b_defaults_to_faces_a_and_float32():
    va, fa, vb, _ = sphere_pair(B=2, level=1)
    vb1, _ = icosphere(1, 0.3, center=(0.6, 0.0, 0.0))
    l1 = collision_loss(va.float(), vb1[None].float().repeat(2, 1, 1), fa, grid_size=10, backend="torch")
    l2 = collision_loss(va, vb1[None].repeat(2, 1, 1), fa, fa, grid_size=10, backend="torch")
    assert l1.dtype == torch.float32
    assert torch.allclose(l1.double(), l2, rtol=1e-4, atol=1e-6)


def test_validation_errors():
    va, fa = icosphere(0)
    v = va[None]
    with pytest.raises(ValueError, match="shape"):
        collision_loss(v[0], v, fa)
    with pytest.raises(ValueError, match="frame counts"):
        collision_loss(v, v.repeat(2, 1, 1), fa)
    with pytest.raises(ValueError, match="vertex indices"):
        collision_loss(v, v, fa + 1)
    with pytest.raises(TypeError, match="int32 or int64"):
        collision_loss(v, v, fa.double())
    with pytest.raises(ValueError, match="grid_size"):
        collision_loss(v, v, fa, grid_size=1)
    with pytest.raises(ValueError, match="reduction"):
        collision_loss(v, v, fa, reduction="max")
    with pytest.raises(ValueError, match="cell_centers"):
        collision_loss(v, v, fa, cell_centers="corner")
    with pytest.raises(ValueError, match="torch backend only"):
        collision_loss(v, v, fa, inside="winding", backend="numba")
    with pytest.raises(ValueError, match="field"):
        collision_loss(v, v, fa, field="unsigned")
    with pytest.raises(ValueError, match="margin must be"):
        collision_loss(v, v, fa, field="signed", margin=-0.01)
    with pytest.raises(ValueError, match="margin needs field='signed'"):
        collision_loss(v, v, fa, margin=0.01)
    with pytest.raises(ValueError, match="field='exact' is implemented by the torch and numba backends"):
        collision_loss(v, v, fa, field="exact", backend="triton")
    with pytest.raises(ValueError, match="taper must be"):
        collision_loss(v, v, fa, taper=-0.01)
    with pytest.raises(ValueError, match="taper applies to field='inside' only"):
        collision_loss(v, v, fa, field="signed", taper=0.01)
    with pytest.raises(BackendUnavailable):
        collision_loss(v, v, fa, backend="cupy")
    with pytest.raises(TypeError):
        collision_loss(v.long(), v, fa)
