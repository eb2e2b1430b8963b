"""h4d_fast.compat.pose2sim with ``handle_LR_swap = true``: against Pose2Sim itself (where it
installs) on its demo and on generated projects with left/right swapped detections, against the
two swap searches written out here (always), and the per-camera search recovering a capture that
the plain search and Pose2Sim's search leave empty."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.compat import pose2sim as P2S
from h4d_fast.compat._pose2sim_swap import mirror_index
from h4d_fast.io.trc import read_trc
from helpers import random_points, ring_cameras
from test_compat_pose2sim import DEMO, _assert_same_trc, _pose2sim, _run_both, demo_project

CONFIG = """[project]
multi_person = {multi}
frame_rate = 30
frame_range = 'auto'

[pose]
pose_model = 'LRTOY'

[triangulation]
reproj_error_threshold_triangulation = {thr}
likelihood_threshold_triangulation = 0.3
min_cameras_for_triangulation = {min_cams}
interp_if_gap_smaller_than = 20
interpolation = '{interp}'
remove_incomplete_frames = false
sections_to_keep = 'all'
min_chunk_size = 10
fill_large_gaps_with = '{fill}'
undistort_points = {undistort}
make_c3d = false
max_distance_m = 1.0
handle_LR_swap = {swap}

[pose.LRTOY]
name = "Neck"
id = 0
[[pose.LRTOY.children]]
name = "RShoulder"
id = 1
[[pose.LRTOY.children.children]]
name = "RWrist"
id = 3
[[pose.LRTOY.children]]
name = "LShoulder"
id = 2
[[pose.LRTOY.children.children]]
name = "LWrist"
id = 4
"""
NAMES = ["Neck", "RShoulder", "RWrist", "LShoulder", "LWrist"]  # the tree's order; json ids 0, 1, 3, 2, 4
LATERAL = [1, 2, 3, 4]  # json ids with a side
PAIR = {1: 2, 2: 1, 3: 4, 4: 3}


def _body(center: np.ndarray, yaw: float) -> np.ndarray:
    """``[5, 3]`` points by json id: neck, R shoulder, L shoulder, R wrist, L wrist (arms spread)."""
    local = np.array([[0, 0, 0.45], [-0.2, 0, 0.4], [0.2, 0, 0.4], [-0.5, 0.1, 0.15], [0.5, 0.1, 0.15]])
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return center + local @ R.T


def set_config(proj: Path, **kw) -> None:
    v = {"multi": False, "thr": 15, "min_cams": 2, "interp": "linear", "fill": "last_value", "undistort": False, "swap": True, **kw}
    v = {k: (str(x).lower() if isinstance(x, bool) else x) for k, x in v.items()}
    (proj / "Config.toml").write_text(CONFIG.format(**v))


def lr_project(tmp: Path, name: str, V: int, frames: int, seed: int, people: int = 1, swap_p: float = 0.25,
               outlier_p: float = 0.05, pattern: bool = False, **cfg) -> tuple[Path, np.ndarray]:
    """A generated project whose detector exchanges a person's left and right in some views.

    Random mode: each (frame, camera, person) swapped with ``swap_p``, plus 1.5 px noise, points
    below the likelihood threshold, a gross outlier (with ``outlier_p``) and missing files. ``pattern``: in every frame
    two cameras swapped and one camera with every point below the likelihood threshold (cameras
    drawn per frame; the swapped ones among those where both pairs of sides lie 100 px apart or
    more), 1 px noise, nothing else. Returns the folder and the truth ``[F, people, 5, 3]``
    by json id."""
    from h4d_fast.io.calibration import write_toml_calibration

    proj = tmp / name
    (proj / "calibration").mkdir(parents=True)
    cams = ring_cameras(V, seed=seed, model="opencv")
    write_toml_calibration(proj / "calibration" / "calib.toml", cams)
    rng = np.random.RandomState(seed)
    start = random_points(people, seed=seed).numpy() * np.array([1.0, 1.0, 0.0]) + np.array([0, 0, 0.9])
    start[:, 0] += np.arange(people) * 1.2
    yaw = rng.uniform(0, 2 * np.pi, people)
    truth = np.stack([np.stack([_body(start[p] + 0.01 * f * np.array([1.0, 0.5, 0.0]), yaw[p] + 0.02 * f) for p in range(people)])
                      for f in range(frames)])
    for c in range(V):
        (proj / "pose" / f"cam{c + 1:02d}_json").mkdir(parents=True)
    for f in range(frames):
        uv = cams.project(torch.as_tensor(truth[f].reshape(-1, 3)))[0].numpy().reshape(people, 5, V, 2)
        if pattern:  # swapped: two views where the sides lie apart (a swap where they overlap changes little)
            apart = np.linalg.norm(uv[0, [1, 3]] - uv[0, [2, 4]], axis=-1).min(0) > 100  # [V]
            pick = rng.permutation(V)
            swapped = set([c for c in pick if apart[c]][:2])
            hidden = next(c for c in pick if c not in swapped)
            assert len(swapped) == 2, f"frame {f}: fewer than two views with the sides apart"
        for c in range(V):
            if not pattern and rng.rand() < 0.03:
                continue  # a missing file
            ppl = []
            for p in range(people):
                k = np.zeros((5, 3))
                k[:, :2] = uv[p, :, c] + rng.normal(0, 1.0 if pattern else 1.5, (5, 2))
                k[:, 2] = 0.9 if pattern else rng.uniform(0.4, 1.0, 5)
                if pattern:
                    if c == hidden:
                        k[:, 2] = 0.1
                else:
                    k[rng.rand(5) < 0.1, 2] = 0.1
                    if rng.rand() < outlier_p:
                        k[rng.randint(5), :2] += 300
                if (c in swapped) if pattern else rng.rand() < swap_p:
                    k[LATERAL] = k[[PAIR[i] for i in LATERAL]]
                ppl.append({"pose_keypoints_2d": k.ravel().tolist()})
            (proj / "pose" / f"cam{c + 1:02d}_json" / f"cam{c + 1:02d}.{f:04d}.json").write_text(json.dumps({"people": ppl}))
    set_config(proj, multi=people > 1, **cfg)
    return proj, truth


# ----------------------------------------------------------------------------- the searches written out
def _oracle(xy, lik, xys, P, thr, min_cams, mode):
    """One point: the plain search with ``mode`` (None, "pose2sim", "per_camera") swap candidates,
    as the module docstrings of ``pose2sim`` and ``_pose2sim_swap`` state them. ``(Q, err)`` or None."""
    C = len(lik)
    avail = np.isfinite(lik) & (lik != 0)
    n_av = int(avail.sum())

    def tri(use, sw):
        pts = np.where(sw[:, None], xys, xy)
        A = np.concatenate([[(pts[c, 0] * P[c, 2] - P[c, 0]) * lik[c], (pts[c, 1] * P[c, 2] - P[c, 1]) * lik[c]] for c in np.nonzero(use)[0]])
        h = np.linalg.svd(A)[2][-1]
        q = P @ np.append(h[:3] / h[3], 1.0)
        return h[:3] / h[3], np.linalg.norm(q[:, :2] / q[:, 2:] - pts, axis=1)

    def first_best(cands):
        errs = [e for e, _ in cands]
        if not errs or not np.isfinite(min(errs)):
            return None
        return cands[int(np.argmin(errs))]

    for k in range(C):
        if C - k < min_cams or k > n_av - min_cams:
            break
        uses = []
        for off in itertools.combinations(range(C), k):
            use = avail.copy()
            use[list(off)] = False
            uses.append(use)
        plain = []
        for use in uses:
            Q, e = tri(use, np.zeros(C, bool))
            plain.append((e[use].mean(), Q))
        best = first_best(plain)
        if best[0] <= thr:
            return best[1], best[0]
        m = n_av - k
        if mode is None or m <= 2:
            continue
        if mode == "pose2sim":
            cands = []
            for use in uses:
                sw = np.zeros(C, bool)
                sw[np.nonzero(use)[0][:m]] = True
                if not np.isfinite(xys[sw]).all():
                    cands.append((np.inf, None))
                    continue
                Q, e = tri(use, sw)
                cands.append((e[sw].mean(), Q))
            best = first_best(cands)
            if best is not None and best[0] <= thr:
                return best[1], best[0]
            continue
        for s in range(1, C):
            if 2 * s >= m:
                break
            cands = []
            for use in uses:
                for sub in itertools.combinations(np.nonzero(use)[0], s):
                    sw = np.zeros(C, bool)
                    sw[list(sub)] = True
                    if np.isfinite(xys[sw]).all():
                        Q, e = tri(use, sw)
                        cands.append((e[use].mean(), Q))
            best = first_best(cands)
            if best is not None and best[0] <= thr:
                return best[1], best[0]
    return None


@pytest.mark.parametrize("mode", ["pose2sim", "per_camera"])
def test_swap_search_matches_the_written_out_search(mode):
    V, N = 6, 150
    cams = ring_cameras(V, seed=11)
    Pm = torch.stack([cams.K[i] @ cams.extrinsics[i] for i in range(V)])
    g = torch.Generator().manual_seed(3)
    XL = random_points(N, seed=12)
    XR = XL + torch.tensor([0.5, 0.2, -0.1], dtype=torch.float64)  # the other side, ~150-250 px away
    uvL = cams.project(XL)[0] + 1.5 * torch.randn(N, V, 2, generator=g, dtype=torch.float64)
    uvR = cams.project(XR)[0] + 1.5 * torch.randn(N, V, 2, generator=g, dtype=torch.float64)
    sw = torch.rand(N, V, generator=g) < 0.25  # the detector exchanged the sides in these views
    xy, xys = torch.where(sw[..., None], uvR, uvL), torch.where(sw[..., None], uvL, uvR)
    bad = torch.rand(N, V, generator=g) < 0.08
    xy[bad] += 100 * torch.randn(int(bad.sum()), 2, generator=g, dtype=torch.float64)
    lik = 0.3 + 0.7 * torch.rand(N, V, generator=g, dtype=torch.float64)
    lik[torch.rand(N, V, generator=g) < 0.12] = float("nan")
    xys[torch.rand(N, V, generator=g) < 0.05] = float("nan")  # the other side missing
    xy[torch.isnan(lik)] = float("nan")
    Q, err, _ = P2S.best_cameras(xy, lik, Pm, 15.0, 2, xy_swap=xys, lr_swap=mode)
    Q0, _, _ = P2S.best_cameras(xy, lik, Pm, 15.0, 2)
    n_ok = n_swapped = 0
    for n in range(N):
        r = _oracle(xy[n].numpy(), lik[n].numpy(), xys[n].numpy(), Pm.numpy(), 15.0, 2, mode)
        if r is None:
            assert torch.isnan(Q[n]).all() and torch.isnan(err[n]), n
            continue
        n_ok += 1
        np.testing.assert_allclose(Q[n].numpy(), r[0], atol=1e-8)
        assert float(err[n]) == pytest.approx(r[1], abs=1e-8)
        n_swapped += not torch.allclose(Q[n], Q0[n], atol=1e-6, equal_nan=True)
    assert n_ok > 100 and n_swapped >= 10, (n_ok, n_swapped)  # swap candidates decided points (measured: 24 and 111 of 149)


def test_mirror_index():
    assert mirror_index(NAMES) == [0, 3, 4, 1, 2]
    assert mirror_index(["Hip", "RHip", "LHip", "right_ear", "left_ear"]) == [0, 2, 1, 4, 3]
    assert mirror_index(["RWrist", "RThumb", "LWrist"]) == [0, 1, 2]  # a side without its pair: no swap at all
    assert mirror_index(["Root", "Nose"]) == [0, 1]  # 'Root' -> 'Loot' is not a keypoint


def test_swap_arguments(tmp_path):
    proj, _ = lr_project(tmp_path, "args", V=4, frames=12, seed=1)
    cfg = P2S._config_dicts(str(proj))[0]
    with pytest.raises(ValueError, match="lr_swap"):
        P2S.triangulate_all(cfg, device="cpu", lr_swap="sideways")
    pts = np.zeros((2, 4, 1, 5, 3))
    with pytest.raises(ValueError, match="names"):
        P2S.triangulate_points(pts, {}, {"handle_LR_swap": True}, torch.device("cpu"))


# ----------------------------------------------------------------------------- against Pose2Sim
@pytest.mark.skipif(not (DEMO / "single_person").is_dir(), reason="Pose2Sim demo data absent")
@pytest.mark.parametrize("kw", [{}, {"thr": 8, "undistort": True}])
def test_demo_with_lr_swap_matches_pose2sim(tmp_path, kw):
    proj = demo_project(tmp_path, **kw)
    cfg_file = proj / "Config.toml"
    cfg_file.write_text(cfg_file.read_text().replace("handle_LR_swap = false", "handle_LR_swap = true"))
    orig, ours = _run_both(proj)
    assert [p.name.replace(".orig", "") for p in orig] == [p.name for p in ours] == ["demo_trial_0-99.trc"]
    _assert_same_trc(orig[0], ours[0], atol=1e-9)  # measured: 2.4e-15 m (default), 8.2e-15 (thr 8, undistort)
    swapped = read_trc(ours[0]).xyz
    cfg = P2S._config_dicts(str(proj))[0]
    cfg["triangulation"]["handle_LR_swap"] = False
    (plain,) = P2S.triangulate_all(cfg, device="cpu")
    d = np.abs(read_trc(plain).xyz - swapped)
    assert (d > 1e-3).sum() > 100  # the swap changed the result (measured: 990 and 1,290 coordinates)


def test_lr_projects_match_pose2sim(tmp_path):
    _pose2sim()
    projects = [lr_project(tmp_path, "lr1", V=5, frames=40, seed=2, outlier_p=0.4, min_cams=3)[0],
                lr_project(tmp_path, "lr2", V=6, frames=30, seed=3, people=2, outlier_p=0.4, thr=10)[0],
                lr_project(tmp_path, "lr3", V=6, frames=20, seed=4, pattern=True, min_cams=4)[0]]
    changed = []
    for proj in projects:
        orig, ours = _run_both(proj)
        assert [p.name.replace(".orig", "") for p in orig] == [p.name for p in ours]
        for a, b in zip(orig, ours):
            _assert_same_trc(a, b, atol=1e-9)  # measured: 3.0e-15 m at most
        swapped = [read_trc(p).xyz for p in ours]
        cfg = P2S._config_dicts(str(proj))[0]
        cfg["triangulation"]["handle_LR_swap"] = False
        plain = [read_trc(p).xyz for p in P2S.triangulate_all(cfg, device="cpu")]
        changed.append(sum(int((np.abs(a - b) > 1e-3).sum()) for a, b in zip(swapped, plain)))
    assert changed[0] > 20 and changed[1] > 20, changed  # the swap decided points (measured: 67, 85; 0 for lr3)


# ----------------------------------------------------------------------------- recovering swapped views
def test_per_camera_swap_recovers_the_swapped_views(tmp_path):
    """Every frame: 2 of 6 cameras see the person's sides exchanged, a third sees nothing, and the
    project asks for 4 cameras. Taking cameras off cannot leave 4 consistent views, so without the
    swap (and with Pose2Sim's search, which swaps every view of a combination) the arms are not
    triangulated; the per-camera search swaps the two views back and finds the truth."""
    proj, truth = lr_project(tmp_path, "pattern", V=6, frames=20, seed=5, pattern=True, min_cams=4, interp="none", fill="nan")
    order = [0, 1, 3, 2, 4]  # the tree's order by json id
    truth = truth[:, 0, order]

    def run(swap: bool, mode: str = "pose2sim") -> np.ndarray:
        for p in (proj / "pose-3d").glob("*"):
            p.unlink()
        set_config(proj, min_cams=4, interp="none", fill="nan", swap=swap)
        (path,) = P2S.triangulation(str(proj), device="cpu", lr_swap=mode)
        t = read_trc(path, axes="yzx")
        assert t.markers == NAMES and t.xyz.shape == truth.shape
        return np.linalg.norm(t.xyz - truth, axis=-1)  # [F, 5] m

    fixed = run(True, "per_camera")
    assert fixed.max() < 0.01  # every point of every frame within 1 cm (1 px noise, f = 1800 px at 4.5 m)
    for err in (run(False), run(True, "pose2sim")):
        assert err[:, 0].max() < 0.01  # the neck has no side: found either way
        assert np.isnan(err[:, 1:]).all()  # the arms: no combination within the threshold in any frame


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["pose2sim", "per_camera"])
def test_swap_search_gpu_matches_cpu(mode):
    cams = ring_cameras(8, seed=7)
    Pm = torch.stack([cams.K[i] @ cams.extrinsics[i] for i in range(8)])
    g = torch.Generator().manual_seed(2)
    X = random_points(400, seed=9)
    uv = cams.project(X)[0] + 2.0 * torch.randn(400, 8, 2, generator=g, dtype=torch.float64)
    uvs = cams.project(X + torch.tensor([0.4, 0.0, 0.1], dtype=torch.float64))[0]
    sw = torch.rand(400, 8, generator=g) < 0.3
    xy, xys = torch.where(sw[..., None], uvs, uv), torch.where(sw[..., None], uv, uvs)
    lik = 0.5 + 0.5 * torch.rand(400, 8, generator=g, dtype=torch.float64)
    a = P2S.best_cameras(xy, lik, Pm, 15.0, 2, xy_swap=xys, lr_swap=mode)
    b = P2S.best_cameras(xy.cuda(), lik.cuda(), Pm.cuda(), 15.0, 2, xy_swap=xys.cuda(), lr_swap=mode)
    torch.testing.assert_close(b[0].cpu(), a[0], atol=1e-8, rtol=0, equal_nan=True)
    assert torch.equal(b[2].cpu(), a[2])

