import numpy as np
import pytest
import torch

from h4d_fast.constants import COCO_SIGMAS
from h4d_fast.ops import dedup_oks, oks
from h4d_fast.ops._oks_torch import keypoint_box_area


def _poses(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    k = torch.zeros(n, 17, 3, dtype=dtype)
    centre = torch.rand(n, 1, 2, generator=g, dtype=dtype) * 1000 + 200
    k[..., :2] = centre + torch.randn(n, 17, 2, generator=g, dtype=dtype) * 60
    k[..., 2] = torch.rand(n, 17, generator=g, dtype=dtype)
    return k


def test_oks_matches_pycocotools_compute_oks():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts = _poses(3, seed=1)
    dts = gts[[0, 1, 2, 0]].clone()
    dts[..., :2] += torch.randn(4, 17, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 8
    dts[..., 2] = torch.rand(4, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    areas = torch.tensor([9000.0, 25000.0, 4000.0], dtype=torch.float64)
    ours = oks(dts, gts, areas=areas[None, :].expand(4, 3))  # [D, G]
    # pycocotools averages over the ground truth's visible keypoints: mark exactly the ones
    # confident in both (our validity rule), one image per detection-gt pair.
    for i in range(4):
        for j in range(3):
            both = (dts[i, :, 2] > 0.2) & (gts[j, :, 2] > 0.2)
            if not bool(both.any()):
                assert float(ours[i, j]) == 0.0
                continue
            kp = gts[j].clone()
            kp[:, 2] = torch.where(both, 2.0, 0.0)
            coco = COCO()
            coco.dataset = {
                "images": [{"id": 1}],
                "categories": [{"id": 1, "name": "person"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": kp.flatten().tolist(),
                                 "num_keypoints": int(both.sum()), "area": float(areas[j]), "iscrowd": 0,
                                 "bbox": [0, 0, 10, 10]}],
            }
            coco.createIndex()
            dt = coco.loadRes([{"image_id": 1, "category_id": 1, "keypoints": dts[i].flatten().tolist(), "score": 1.0}])
            ev = COCOeval(coco, dt, "keypoints")
            ev.params.kpt_oks_sigmas = np.array(COCO_SIGMAS)
            ev._prepare()
            ref = ev.computeOks(1, 1)
            np.testing.assert_allclose(float(ours[i, j]), float(np.asarray(ref)[0, 0]), rtol=1e-12, atol=1e-12)


def test_oks_identity_symmetry_and_range():
    k = _poses(6, seed=4)
    o = oks(k, k)
    assert o.shape == (6, 6)
    torch.testing.assert_close(o, o.T)
    has = (k[..., 2] > 0.2).any(-1)
    assert torch.allclose(o.diagonal()[has], torch.ones(int(has.sum()), dtype=o.dtype))
    assert bool(((o >= 0) & (o <= 1)).all())


def test_oks_default_area_is_mean_keypoint_box_area():
    a, b = _poses(1, seed=5), _poses(1, seed=6)
    area = 0.5 * (keypoint_box_area(a) + keypoint_box_area(b))
    torch.testing.assert_close(oks(a, b), oks(a, b, areas=area[:, None]))


def test_oks_hand_computed():
    a = torch.zeros(1, 17, 3, dtype=torch.float64)
    b = torch.zeros(1, 17, 3, dtype=torch.float64)
    a[0, 0] = torch.tensor([100.0, 100.0, 0.9])
    b[0, 0] = torch.tensor([103.0, 104.0, 0.9])  # 5 px away, only the nose is valid
    area = torch.tensor([[400.0]], dtype=torch.float64)
    var = (2 * 0.026) ** 2
    expect = np.exp(-25.0 / var / (400.0 + np.spacing(1)) / 2)
    assert abs(float(oks(a, b, areas=area)) - expect) < 1e-12


def test_oks_batched_leading_dims_and_no_valid():
    k = _poses(2 * 3 * 4, seed=7).reshape(2, 3, 4, 17, 3)
    o = oks(k, k)
    assert o.shape == (2, 3, 4, 4)
    torch.testing.assert_close(o[1, 2], oks(k[1, 2], k[1, 2]))
    k0 = k.clone()
    k0[..., 2] = 0
    assert bool((oks(k0, k0) == 0).all())


def _dup_scene():
    k = _poses(4, seed=8)
    k[..., 2] = 0.9
    k[1] = k[0].clone()
    k[1, :, :2] += 0.5  # near copy of 0
    k[1, :, 2] = 0.8  # less confident
    return k


def test_dedup_drop_both_removes_both_copies():
    k = _dup_scene()
    keep = dedup_oks(k, thr=0.7, policy="drop-both")
    assert keep.tolist() == [False, False, True, True]


def test_dedup_keep_best_keeps_the_confident_copy():
    k = _dup_scene()
    keep = dedup_oks(k, thr=0.7, policy="keep-best")
    assert keep.tolist() == [True, False, True, True]
    k[1, :, 2] = 0.95  # now the copy is better
    assert dedup_oks(k, thr=0.7, policy="keep-best").tolist() == [False, True, True, True]


def test_dedup_keep_best_chain_is_greedy():
    # a ~ b, b ~ c, a !~ c: keep-best keeps a (best), drops b, keeps c
    k = torch.zeros(3, 17, 3, dtype=torch.float64)
    base = _poses(1, seed=9)[0]
    base[:, 2] = 1.0
    for i, (dx, c) in enumerate([(0.0, 0.99), (6.0, 0.9), (12.0, 0.8)]):
        k[i] = base
        k[i, :, 0] += dx
        k[i, :, 2] = c
    o = oks(k, k)
    thr = float((o[0, 1] + o[0, 2]) / 2)  # between: a~b, b~c above; a~c below
    assert o[0, 1] > thr and o[1, 2] > thr and o[0, 2] < thr
    assert dedup_oks(k, thr=thr, policy="keep-best").tolist() == [True, False, True]
    assert dedup_oks(k, thr=thr, policy="drop-both").tolist() == [False, False, False]


def test_dedup_respects_valid_and_edge_cases():
    k = _dup_scene()
    valid = torch.tensor([True, False, True, True])
    assert dedup_oks(k, valid, policy="drop-both").tolist() == [True, False, True, True]
    one = dedup_oks(k[:1], policy="drop-both")
    assert one.tolist() == [True]
    empty = dedup_oks(torch.zeros(5, 0, 17, 3), torch.zeros(5, 0, dtype=torch.bool))
    assert empty.shape == (5, 0)
    batched = dedup_oks(k.expand(3, 2, 4, 17, 3), policy="keep-best")
    assert batched.shape == (3, 2, 4) and batched[2, 1].tolist() == [True, False, True, True]


def test_dedup_bad_policy_raises():
    with pytest.raises(ValueError, match="policy"):
        dedup_oks(_dup_scene(), policy="nope")
