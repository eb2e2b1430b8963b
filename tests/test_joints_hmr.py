"""HMR2.0's 44-joint layout: every slot checked by name against a hand-written table, for COCO-17,
SMPL-45 and SMPL-24 sources, in 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from h4d_fast.constants import COCO17_NAMES, SMPL_JOINT_NAMES
from h4d_fast.eval.joints import (
    HMR2_FLIP,
    HMR2_JOINT_NAMES,
    NUM_HMR2,
    OPENPOSE_TO_SMPL24,
    hmr2_table_markdown,
    hmr2_to_smpl24,
    to_hmr2,
    to_hmr2_2d,
    to_hmr2_3d,
)

SMPL45_NAMES = list(SMPL_JOINT_NAMES) + [
    "nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky", "rthumb", "rindex", "rmiddle", "rring", "rpinky",
]  # fmt: skip

# HMR2.0 slot: (name, SMPL-45 source, SMPL-24 source, COCO-17 source); a pair = midpoint; None = invalid
EXPECTED = [
    ("OP Nose", "nose", None, "nose"),
    ("OP Neck", "neck", "neck", ("left_shoulder", "right_shoulder")),
    ("OP RShoulder", "right_shoulder", "right_shoulder", "right_shoulder"),
    ("OP RElbow", "right_elbow", "right_elbow", "right_elbow"),
    ("OP RWrist", "right_wrist", "right_wrist", "right_wrist"),
    ("OP LShoulder", "left_shoulder", "left_shoulder", "left_shoulder"),
    ("OP LElbow", "left_elbow", "left_elbow", "left_elbow"),
    ("OP LWrist", "left_wrist", "left_wrist", "left_wrist"),
    ("OP MidHip", "pelvis", "pelvis", ("left_hip", "right_hip")),
    ("OP RHip", "right_hip", "right_hip", "right_hip"),
    ("OP RKnee", "right_knee", "right_knee", "right_knee"),
    ("OP RAnkle", "right_ankle", "right_ankle", "right_ankle"),
    ("OP LHip", "left_hip", "left_hip", "left_hip"),
    ("OP LKnee", "left_knee", "left_knee", "left_knee"),
    ("OP LAnkle", "left_ankle", "left_ankle", "left_ankle"),
    ("OP REye", "reye", None, "right_eye"),
    ("OP LEye", "leye", None, "left_eye"),
    ("OP REar", "rear", None, "right_ear"),
    ("OP LEar", "lear", None, "left_ear"),
    ("OP LBigToe", "LBigToe", None, None),
    ("OP LSmallToe", "LSmallToe", None, None),
    ("OP LHeel", "LHeel", None, None),
    ("OP RBigToe", "RBigToe", None, None),
    ("OP RSmallToe", "RSmallToe", None, None),
    ("OP RHeel", "RHeel", None, None),
    ("Right Ankle", "right_ankle", "right_ankle", "right_ankle"),
    ("Right Knee", "right_knee", "right_knee", "right_knee"),
    ("Right Hip", "right_hip", "right_hip", "right_hip"),
    ("Left Hip", "left_hip", "left_hip", "left_hip"),
    ("Left Knee", "left_knee", "left_knee", "left_knee"),
    ("Left Ankle", "left_ankle", "left_ankle", "left_ankle"),
    ("Right Wrist", "right_wrist", "right_wrist", "right_wrist"),
    ("Right Elbow", "right_elbow", "right_elbow", "right_elbow"),
    ("Right Shoulder", "right_shoulder", "right_shoulder", "right_shoulder"),
    ("Left Shoulder", "left_shoulder", "left_shoulder", "left_shoulder"),
    ("Left Elbow", "left_elbow", "left_elbow", "left_elbow"),
    ("Left Wrist", "left_wrist", "left_wrist", "left_wrist"),
    ("Neck (LSP)", None, None, None),
    ("Top of Head (LSP)", None, None, None),
    ("Pelvis (MPII)", None, None, None),
    ("Thorax (MPII)", None, None, None),
    ("Spine (H36M)", None, None, None),
    ("Jaw (H36M)", None, None, None),
    ("Head (H36M)", None, None, None),
]


def test_names_and_count():
    assert NUM_HMR2 == 44 and len(EXPECTED) == 44
    assert list(HMR2_JOINT_NAMES) == [e[0] for e in EXPECTED]


def _coded(names, dims, conf=True):
    """Joint ``i`` at ``(i + 1, 10 (i + 1), 100 (i + 1))`` (first ``dims``), confidence ``0.5 + i / 100``."""
    n = len(names)
    x = torch.stack([torch.arange(1, n + 1, dtype=torch.float64) * s for s in (1, 10, 100)[:dims]], -1)
    if conf:
        x = torch.cat([x, (0.5 + torch.arange(n, dtype=torch.float64) / 100)[:, None]], -1)
    return x


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("source,col,names", [("smpl45", 1, SMPL45_NAMES), ("smpl24", 2, list(SMPL_JOINT_NAMES)), ("coco17", 3, list(COCO17_NAMES))])
def test_every_slot(source, col, names, dims):
    src = _coded(names, dims)
    conv = (to_hmr2_2d if dims == 2 else to_hmr2_3d)(src, source)
    assert conv.shape == (44, dims + 1)
    for slot, row in enumerate(EXPECTED):
        want = row[col]
        got = conv[slot]
        if want is None:
            assert float(got[dims]) == 0.0 and bool((got[:dims] == 0).all()), (source, row[0])
        elif isinstance(want, tuple):
            a, b = names.index(want[0]), names.index(want[1])
            torch.testing.assert_close(got[:dims], 0.5 * (src[a, :dims] + src[b, :dims]))
            assert float(got[dims]) == pytest.approx(min(float(src[a, dims]), float(src[b, dims]))), row[0]
        else:
            i = names.index(want)
            torch.testing.assert_close(got, src[i], msg=f"{source} {row[0]}")


def test_confidence_defaults_nan_and_numpy():
    # no confidence channel -> 1; NaN points -> confidence 0; numpy in, numpy out; batch dims kept
    x = np.random.default_rng(0).normal(size=(2, 5, 17, 2))
    x[0, 0, 3] = np.nan
    out = to_hmr2_2d(x, "coco17")
    assert isinstance(out, np.ndarray) and out.shape == (2, 5, 44, 3)
    assert out[0, 0, 18, 2] == 0.0 and (out[0, 0, 18, :2] == 0).all()  # OP LEar <- COCO left_ear (index 3)
    assert out[1, 1, 0, 2] == 1.0
    # the midpoints need both ends
    c = _coded(list(COCO17_NAMES), 2)
    c[5, 2] = 0.0
    assert float(to_hmr2_2d(c, "coco17")[1, 2]) == 0.0
    assert float(to_hmr2_2d(c, "coco17", derive_midpoints=False)[8, 2]) == 0.0
    # 3D points without confidence through the generic entry point
    p = torch.randn(45, 3)
    o = to_hmr2(p)
    assert o.shape == (44, 4) and float(o[0, 3]) == 1.0 and torch.equal(o[0, :3], p[24])
    with pytest.raises(ValueError):
        to_hmr2_2d(torch.zeros(30, 2))


def test_benchmark_reorder_and_flip():
    assert OPENPOSE_TO_SMPL24 == (8, 12, 9, 8, 13, 10, 8, 14, 11, 8, 20, 23, 1, 5, 2, 0, 5, 2, 6, 3, 7, 4, 7, 4)
    # round trip: SMPL-45 -> HMR2.0 -> SMPL-24 puts every tree joint the benchmark maps directly back in place
    j45 = _coded(SMPL45_NAMES, 2)
    back = hmr2_to_smpl24(to_hmr2_2d(j45, "smpl45"))
    for smpl_j in (0, 1, 2, 4, 5, 7, 8, 12, 16, 17, 18, 19, 20, 21):
        torch.testing.assert_close(back[smpl_j], j45[smpl_j])
    # flip: an involution that swaps left and right names
    assert sorted(HMR2_FLIP) == list(range(44)) and all(HMR2_FLIP[HMR2_FLIP[i]] == i for i in range(44))
    swap = lambda s: s.replace("Left", "@").replace("Right", "Left").replace("@", "Right").replace(" L", " @").replace(" R", " L").replace(" @", " R")  # noqa: E731
    for i, j in enumerate(HMR2_FLIP):
        assert HMR2_JOINT_NAMES[j] == swap(HMR2_JOINT_NAMES[i]), HMR2_JOINT_NAMES[i]
    assert hmr2_table_markdown().count("\n") == 45
