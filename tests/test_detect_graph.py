"""The converted-graph files (JSON + npz) of the embedded pose models: hand-written small graphs run
with torch ops equal to plain NHWC references, and crafted / corrupt files are refused with one line
naming the file (a pickled member is never unpickled). Needs neither tflite nor mediapipe."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from h4d_fast.detect.models import load_person_detector
from h4d_fast.detect.models.graph import TorchGraph, load_graph, save_graph, to_tflite_layout
from h4d_fast.detect.models.tflite_import import SPEC_FORMAT, SPEC_VERSION
from h4d_fast.errors import InputError


def _spec(ops, tensors, inputs, outputs, constants):
    return {"format": SPEC_FORMAT, "version": SPEC_VERSION, "name": "g", "inputs": inputs, "outputs": outputs,
            "tensors": {str(k): {"name": f"t{k}", "shape": v} for k, v in tensors.items()}, "ops": ops, "constants": constants}


def _same_pad_nhwc(x, k, s):
    """TF SAME padding of an NHWC numpy batch for kernel k and stride s (extra pixel after)."""
    H, W = x.shape[1:3]
    ph = max((-(-H // s) - 1) * s + k - H, 0)
    pw = max((-(-W // s) - 1) * s + k - W, 0)
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def _conv_nhwc(x, w, b, s, depthwise=False):
    """Plain loop convolution in TFLite's layouts (x NHWC, w OHWI or 1HWC), VALID."""
    N, H, W, C = x.shape
    kh, kw = w.shape[1:3]
    Ho, Wo = (H - kh) // s + 1, (W - kw) // s + 1
    O = w.shape[3] if depthwise else w.shape[0]
    out = np.zeros((N, Ho, Wo, O))
    for i in range(Ho):
        for j in range(Wo):
            patch = x[:, i * s:i * s + kh, j * s:j * s + kw, :]  # N kh kw C
            if depthwise:
                out[:, i, j] = (patch * w[0]).sum((1, 2))
            else:
                out[:, i, j] = np.einsum("nhwc,ohwc->no", patch, w)
    return out + b


@pytest.mark.parametrize("H,W,stride", [(9, 8, 1), (9, 8, 2), (8, 8, 2)])
def test_small_graph_matches_nhwc_reference(H, W, stride):
    """conv (SAME, RELU6) -> depthwise (SAME) -> channel PAD -> ADD with the padded input ->
    DEPTH_TO_SPACE -> RESHAPE -> CONCATENATION, against numpy loops in NHWC."""
    rng = np.random.default_rng(stride * 100 + H)
    C, O = 3, 4
    w1 = rng.normal(size=(O, 3, 3, C)).astype(np.float32)
    b1 = rng.normal(size=O).astype(np.float32)
    w2 = rng.normal(size=(1, 3, 3, O)).astype(np.float32)
    b2 = rng.normal(size=O).astype(np.float32)
    Ho, Wo = -(-H // stride), -(-W // stride)
    pads = np.array([[0, 0], [0, 0], [0, 0], [0, 1]], np.int32)  # channel padding: C 3 -> 4
    tensors = {0: [1, H, W, C], 1: list(w1.shape), 2: [O], 3: [1, Ho, Wo, O], 4: list(w2.shape), 5: [O], 6: [1, Ho, Wo, O],
               7: [4, 2], 8: [1, H, W, C + 1], 9: [1, Ho // 2 * 2, Wo // 2 * 2, O], 10: [1, Ho, Wo, O],
               11: [1, Ho, Wo, O], 12: [1, Ho * Wo * O // O, O], 13: [1, 2 * Ho * Wo, O]}
    ops = [
        {"op": "CONV_2D", "inputs": [0, 1, 2], "outputs": [3], "options": {"Padding": "SAME", "StrideH": stride, "StrideW": stride, "FusedActivationFunction": "RELU6"}},
        {"op": "DEPTHWISE_CONV_2D", "inputs": [3, 4, 5], "outputs": [6], "options": {"Padding": "SAME", "StrideH": 1, "StrideW": 1, "DepthMultiplier": 1}},
        {"op": "PAD", "inputs": [0, 7], "outputs": [8], "options": {}},
        {"op": "MUL", "inputs": [6, 5], "outputs": [10], "options": {"FusedActivationFunction": "NONE"}},
        {"op": "ADD", "inputs": [10, 6], "outputs": [11], "options": {"FusedActivationFunction": "RELU"}},
        {"op": "RESHAPE", "inputs": [11], "outputs": [12], "options": {}},
        {"op": "CONCATENATION", "inputs": [12, 12], "outputs": [13], "options": {"Axis": 1, "FusedActivationFunction": "NONE"}},
    ]
    spec = _spec(ops, tensors, [0], [13, 8, 6], [1, 2, 4, 5, 7])
    consts = {"t1": w1, "t2": b1, "t4": w2, "t5": b2, "t7": pads.astype(np.int64)}
    g = TorchGraph(spec, consts)
    x = rng.uniform(0, 1, (2, H, W, C)).astype(np.float32)  # batch 2: the file's batch is free
    out, padded, dw = [to_tflite_layout(o).numpy() for o in g(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())]
    a = np.clip(_conv_nhwc(_same_pad_nhwc(x, 3, stride), w1, b1, stride), 0, 6)
    d = _conv_nhwc(_same_pad_nhwc(a, 3, 1), w2, b2, 1, depthwise=True)
    np.testing.assert_allclose(dw, d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(padded, np.pad(x, pads), atol=0)
    r = np.maximum(d * b2 + d, 0).reshape(2, -1, O)
    np.testing.assert_allclose(out, np.concatenate([r, r], 1), rtol=1e-4, atol=1e-4)
    # asking for some outputs runs only the ops they depend on, with the same values
    assert [o["op"] for o in g.ops_for((2,))] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    (only_dw,) = g(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), outputs=(2,))
    np.testing.assert_array_equal(to_tflite_layout(only_dw).numpy(), dw)


def test_depth_to_space_and_resize_follow_tflite_semantics():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 3, 2, 8)).astype(np.float32)  # NHWC, block 2 -> [1, 6, 4, 2]
    spec = _spec([{"op": "DEPTH_TO_SPACE", "inputs": [0], "outputs": [1], "options": {"BlockSize": 2}},
                  {"op": "RESIZE_BILINEAR", "inputs": [0, 2], "outputs": [3], "options": {"HalfPixelCenters": True, "AlignCorners": False}}],
                 {0: [1, 3, 2, 8], 1: [1, 6, 4, 2], 2: [2], 3: [1, 6, 4, 8]}, [0], [1, 3], [2])
    g = TorchGraph(spec, {"t2": np.array([6, 4], np.int64)})
    d2s, rs = [to_tflite_layout(o).numpy() for o in g(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())]
    ref = np.zeros((1, 6, 4, 2), np.float32)  # TF: out[h*2+i, w*2+j, c] = in[h, w, (i*2+j)*C + c]
    for h in range(3):
        for w in range(2):
            for i in range(2):
                for j in range(2):
                    ref[0, h * 2 + i, w * 2 + j] = x[0, h, w, (i * 2 + j) * 2:(i * 2 + j) * 2 + 2]
    np.testing.assert_array_equal(d2s, ref)
    want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(6, 4), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(rs, want.permute(0, 2, 3, 1).numpy(), atol=1e-6)


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _small(tmp_path: Path) -> Path:
    spec = _spec([{"op": "ADD", "inputs": [0, 1], "outputs": [2], "options": {"FusedActivationFunction": "NONE"}}],
                 {0: [1, 2], 1: [2], 2: [1, 2]}, [0], [2], [1])
    save_graph(tmp_path, "g", spec, {"t1": np.array([1.0, 2.0], np.float32)})
    return tmp_path


def test_graph_files_round_trip_and_refusals(tmp_path):
    folder = _small(tmp_path)
    g = load_graph(folder, "g")
    np.testing.assert_allclose(g(torch.zeros(3, 2))[0].numpy(), [[1, 2]] * 3)
    # a pickled member is refused, never unpickled
    marker = tmp_path / "PWNED"
    np.savez(folder / "g.npz", t1=np.array({"x": _Call(builtins.eval, f"__import__('os').system('touch {marker}') or 1")}, dtype=object))
    with pytest.raises(InputError) as e:
        load_graph(folder, "g")
    assert e.value.path == folder / "g.npz" and not marker.exists()
    # missing constants, not a zip, missing file
    np.savez(folder / "g.npz", other=np.ones(2))
    with pytest.raises(InputError, match="constants missing"):
        load_graph(folder, "g")
    (folder / "g.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError) as e:
        load_graph(folder, "g")
    assert e.value.path == folder / "g.npz"
    (folder / "g.npz").unlink()
    with pytest.raises(InputError) as e:
        load_graph(folder, "g")
    assert e.value.path == folder / "g.npz"
    # JSON: not JSON, another format, an op outside the supported set, another version
    js = folder / "g.json"
    for text, what in (("{", "bad JSON"), (json.dumps({"format": "x"}), "format"),
                       (json.dumps({**json.loads(json.dumps(_spec([{"op": "CUSTOM:evil", "inputs": [0], "outputs": [1], "options": {}}], {0: [1], 1: [1]}, [0], [1], [])))}), "unsupported op"),
                       (json.dumps({"format": SPEC_FORMAT, "version": 99}), "version")):
        js.write_text(text)
        with pytest.raises(InputError) as e:
            load_graph(folder, "g")
        assert e.value.path == js and what in str(e.value)


def test_person_detector_refuses_other_files(tmp_path):
    p = tmp_path / "yolox.onnx"
    p.write_bytes(b"x")
    with pytest.raises(InputError) as e:
        load_person_detector(p)
    assert str(p) in str(e.value)
