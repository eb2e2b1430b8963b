"""h4d_fast.compat.cocoeval against pycocotools / xtcocotools on generated data with their edge cases."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from h4d_fast.compat import cocoeval as CE

K = 17


def make_data(seed: int = 0, n_img: int = 120, n_cat: int = 3, wholebody: bool = False) -> tuple[dict, list]:
    """Ground truth with images without annotations, crowd, zero-area and no-visible-keypoint
    annotations, several categories; detections with tied scores, false positives, more than 20
    per cell in places (the benchmark's generator)."""
    from bench.adapters import coco_keypoint_data

    return coco_keypoint_data(seed, n_img, n_cat, K, wholebody)


def run(orig_cls, ours_cls, coco_mod, gt_dict, dts, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_mod.COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(dts))
        out = []
        for cls in (orig_cls, ours_cls):
            E = cls(gt, dt, **kw)
            E.evaluate()
            E.accumulate()
            if kw.get("iouType") != "keypoints_crowd":  # its summary needs CrowdPose's crowd index
                E.summarize()
            out.append(E)
    return out


def assert_same_ious(a: dict, b: dict) -> int:
    nonempty = 0
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, list):
            assert isinstance(y, list) and not y, k
            continue
        nonempty += 1
        assert x.shape == y.shape, k
        np.testing.assert_allclose(y, x, atol=1e-12, rtol=0)  # measured 3e-16
    return nonempty


def test_matches_pycocotools():
    pytest.importorskip("pycocotools", reason="pycocotools not installed (pip install 'h4d_fast[dev]')")
    from pycocotools import coco
    from pycocotools.cocoeval import COCOeval

    gt, dts = make_data(0)
    a, b = run(COCOeval, CE.COCOeval, coco, gt, dts, iouType="keypoints")
    assert assert_same_ious(a.ious, b.ious) > 100
    assert np.array_equal(a.stats, b.stats)
    # a cell read directly: computeOks of an (image, category) pair the batch holds
    k = next(k for k, v in a.ious.items() if not isinstance(v, list))
    np.testing.assert_allclose(b.computeOks(*k), a.computeOks(*k), atol=1e-12)
    # and the function on one cell's lists equals the method
    sig = a.params.kpt_oks_sigmas
    np.testing.assert_allclose(CE.compute_oks(a._dts[k], a._gts[k], sig, a.params.maxDets[-1], device="cpu"), a.computeOks(*k), atol=1e-12)


def test_no_categories_mode_matches_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools import coco
    from pycocotools.cocoeval import COCOeval

    gt, dts = make_data(1, n_img=40)
    with contextlib.redirect_stdout(io.StringIO()):
        g = coco.COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        d = g.loadRes(copy.deepcopy(dts))
        E = [cls(g, d, "keypoints") for cls in (COCOeval, CE.COCOeval)]
        for e in E:
            e.params.useCats = 0
            e.evaluate()
    assert_same_ious(E[0].ious, E[1].ious)


@pytest.mark.parametrize("iou_type,use_area", [("keypoints", True), ("keypoints", False), ("keypoints_wholebody", True), ("keypoints_crowd", True)])
def test_matches_xtcocotools(iou_type, use_area):
    xt = pytest.importorskip("xtcocotools.cocoeval", reason="xtcocotools not installed (pip install 'h4d_fast[compat]')")
    from xtcocotools import coco

    whole = iou_type == "keypoints_wholebody"
    gt, dts = make_data(2, n_img=60, wholebody=whole)
    sig = None
    if whole:
        sig = np.full(K + 16, 0.05)
    a, b = run(xt.COCOeval, CE.XTCOCOeval, coco, gt, dts, iouType=iou_type, sigmas=sig, use_area=use_area)
    assert assert_same_ious(a.ious, b.ious) > 30
    assert np.array_equal(a.eval["precision"], b.eval["precision"])


@pytest.mark.gpu
def test_gpu_matches_cpu():
    pytest.importorskip("pycocotools")
    gt, dts = make_data(3, n_img=50)
    cells = [(dts[i : i + 3], gt["annotations"][i : i + 2]) for i in range(0, 60, 3)]
    sig = np.full(K, 0.07)
    for x, y in zip(CE.oks_cells(cells, sig, 20, device="cuda"), CE.oks_cells(cells, sig, 20, device="cpu")):
        np.testing.assert_allclose(x, y, atol=1e-12)
