"""User ONNX pose models: decoding checked exactly on small models the tests build (heatmap and
SimCC heads, COCO-17 and COCO-WholeBody-133, dynamic and fixed batch), and every kind of file that
is not a pose model refused with one line naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx (dev extra) builds the test models")
pytest.importorskip("onnxruntime", reason="onnxruntime (detect / dev extra) runs ONNX pose models")

from h4d_fast.detect.api import PoseModel  # noqa: E402
from h4d_fast.detect.models import load_pose_model  # noqa: E402
from h4d_fast.detect.models.onnx_pose import decode_heatmaps, decode_simcc  # noqa: E402
from h4d_fast.errors import InputError  # noqa: E402
from onnx_models import constant_heatmap_model, constant_simcc_model, following_heatmap_model  # noqa: E402


def _planted_heatmaps(K: int, h: int, w: int, seed: int = 0):
    """Heatmaps with one peak per keypoint at a random inner cell, a smaller right / lower
    neighbour on a random side each, so the quarter-cell step has a known sign."""
    rng = np.random.default_rng(seed)
    hm = rng.uniform(0.0, 0.05, (K, h, w)).astype(np.float32)
    cols = rng.integers(1, w - 1, K)
    rows = rng.integers(1, h - 1, K)
    sx = rng.choice([-1, 1], K)
    sy = rng.choice([-1, 1], K)
    peak = rng.uniform(0.5, 0.95, K)
    for k in range(K):
        hm[k, rows[k], cols[k]] = peak[k]
        hm[k, rows[k], cols[k] + sx[k]] = 0.3
        hm[k, rows[k] + sy[k], cols[k]] = 0.2
    return hm, cols + 0.25 * sx, rows + 0.25 * sy, peak


@pytest.mark.parametrize("K", [17, 133])
@pytest.mark.parametrize("codec", ["udp", "msra"])
def test_heatmap_head_decodes_planted_peaks(tmp_path, K, codec):
    H, W, h, w = 64, 48, 16, 12
    hm, cx, cy, peak = _planted_heatmaps(K, h, w, seed=K)
    model = load_pose_model(constant_heatmap_model(tmp_path / "hm.onnx", hm, H, W), codec=codec)
    assert isinstance(model, PoseModel)
    assert model.input_size == (H, W) and model.name == "hm" and model.num_keypoints == K
    out = model(torch.rand(5, 3, H, W))
    assert out.shape == (5, 17, 3)
    sx, sy = ((W - 1) / (w - 1), (H - 1) / (h - 1)) if codec == "udp" else (W / w, H / h)
    want = np.stack([cx * sx, cy * sy, peak], -1)[:17]
    for n in range(5):
        np.testing.assert_allclose(out[n].numpy(), want, rtol=0, atol=1e-5)
    native = model.keypoints_native(torch.rand(2, 3, H, W))
    assert native.shape == (2, K, 3)
    np.testing.assert_allclose(native[0, :, 0].numpy(), cx * sx, atol=1e-5)


@pytest.mark.parametrize("K", [17, 133])
@pytest.mark.parametrize("batch", ["N", 1, 4])
def test_simcc_head_decodes_planted_peaks(tmp_path, K, batch):
    H, W, ratio = 64, 48, 2.0
    rng = np.random.default_rng(K)
    sx = rng.uniform(0, 0.1, (K, int(W * ratio))).astype(np.float32)
    sy = rng.uniform(0, 0.1, (K, int(H * ratio))).astype(np.float32)
    ix = rng.integers(0, sx.shape[1], K)
    iy = rng.integers(0, sy.shape[1], K)
    vx = rng.uniform(0.3, 1.4, K)  # RTMPose's maxima may exceed 1: the confidence is clipped
    vy = rng.uniform(0.3, 1.4, K)
    sx[np.arange(K), ix] = vx
    sy[np.arange(K), iy] = vy
    # outputs named so that the y vector comes first in the file: the names decide
    model = load_pose_model(constant_simcc_model(tmp_path / "simcc.onnx", sx, sy, H, W, batch=batch, names=("simcc_x", "simcc_y")))
    assert model.split_ratio == ratio
    out = model(torch.rand(7, 3, H, W))  # 7 crops: several chunks, a padded last one for batch 4
    want = np.stack([ix / ratio, iy / ratio, np.clip(np.minimum(vx, vy), 0, 1)], -1)[:17]
    assert out.shape == (7, 17, 3)
    for n in range(7):
        np.testing.assert_allclose(out[n].numpy(), want, atol=1e-6)


def test_heatmap_follows_each_crop(tmp_path):
    """A bright square planted at a different place in each crop is found in that crop (batch
    order kept, normalisation applied: the spot is the maximum after mean / std)."""
    H, W, s = 64, 48, 4
    model = load_pose_model(following_heatmap_model(tmp_path / "f.onnx", 17, H, W, stride=s), codec="msra")
    cells = [(2, 3), (10, 7), (14, 0)]
    crops = torch.zeros(len(cells), 3, H, W)
    for n, (r, c) in enumerate(cells):
        crops[n, 0, r * s:(r + 1) * s, c * s:(c + 1) * s] = 1.0
    out = model(crops)
    for n, (r, c) in enumerate(cells):
        np.testing.assert_allclose(out[n, :, 0].numpy(), c * W / (W // s), atol=1e-5)
        np.testing.assert_allclose(out[n, :, 1].numpy(), r * H / (H // s), atol=1e-5)
        assert float(out[n, :, 2].min()) == 1.0  # (255 - 123.675) / 58.395 > 1, clipped
    assert model(torch.zeros(0, 3, H, W)).shape == (0, 17, 3)


def test_normalisation_from_arguments_metadata_or_default(tmp_path, capsys):
    """The heatmap of the 'following' model is the normalised first input channel (pooled), so
    its peak value tells which normalisation was applied."""
    H, W = 32, 32
    x = torch.zeros(1, 3, H, W)
    x[0, 0, 8:12, 8:12] = 0.5  # R = 127.5 in the spot
    x[0, 2, 8:12, 8:12] = 0.25  # B = 63.75

    def peak(**kw):
        return float(load_pose_model(p, **kw).keypoints_native(x)[0, 0, 2])

    p = following_heatmap_model(tmp_path / "plain.onnx", 17, H, W)
    assert peak() == pytest.approx((127.5 - 123.675) / 58.395, abs=1e-5)  # mmpose default, RGB
    assert peak(mean=(0, 0, 0), std=(255, 1, 1)) == pytest.approx(0.5, abs=1e-6)
    assert peak(mean=(0, 0, 0), std=(255, 1, 1), bgr=True) == pytest.approx(0.25, abs=1e-6)  # channel 0 is B
    p = following_heatmap_model(tmp_path / "meta.onnx", 17, H, W, metadata={"mean": "[27.5, 0, 0]", "std": "100,1,1", "to_rgb": "false"})
    m = load_pose_model(p)
    assert m.mean == (27.5, 0.0, 0.0) and m.std == (100.0, 1.0, 1.0) and m.bgr
    assert peak() == pytest.approx((63.75 - 27.5) / 100, abs=1e-6)
    assert peak(mean=(0, 0, 0), std=(255, 1, 1), bgr=False) == pytest.approx(0.5, abs=1e-6)  # arguments win
    p = following_heatmap_model(tmp_path / "badmeta.onnx", 17, H, W, metadata={"std": "1, 0, 1"})
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert str(p) in str(e.value) and e.value.field == "std"
    from h4d_fast.cli import main

    p = following_heatmap_model(tmp_path / "info.onnx", 17, H, W)
    assert main(["models", "info", str(p)]) == 0
    info = __import__("json").loads(capsys.readouterr().out)
    assert info["head"] == "heatmap" and info["keypoints"] == 17 and info["input_size"] == [H, W]


def test_decoders_edge_cells_and_torch_reference():
    """Peaks on the border get no quarter step; random heatmaps agree with a per-element loop."""
    rng = np.random.default_rng(3)
    hm = torch.from_numpy(rng.normal(size=(3, 5, 6, 7)).astype(np.float32))
    got = decode_heatmaps(hm, (24, 28), "msra")
    for n in range(3):
        for k in range(5):
            a = hm[n, k].numpy()
            r, c = np.unravel_index(np.argmax(a), a.shape)
            x, y = float(c), float(r)
            if 0 < c < a.shape[1] - 1:
                x += 0.25 * np.sign(a[r, c + 1] - a[r, c - 1])
            if 0 < r < a.shape[0] - 1:
                y += 0.25 * np.sign(a[r + 1, c] - a[r - 1, c])
            np.testing.assert_allclose(got[n, k].numpy(), [x * 4, y * 4, np.clip(a.max(), 0, 1)], atol=1e-5)
    sx, sy = torch.randn(2, 4, 10), torch.randn(2, 4, 8)
    d = decode_simcc(sx, sy, 2.0)
    np.testing.assert_allclose(d[..., 0].numpy(), sx.argmax(-1).numpy() / 2.0)
    np.testing.assert_allclose(d[..., 2].numpy(), torch.minimum(sx.amax(-1), sy.amax(-1)).clamp(0, 1).numpy())


def _one_line(err: InputError, path) -> str:
    msg = str(err)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_not_a_pose_model_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    bad = tmp_path / "text.onnx"
    bad.write_text("not a model at all")
    with pytest.raises(InputError) as e:
        load_pose_model(bad)
    assert "ONNX" in _one_line(e.value, bad)

    def save(name, inputs, outputs, nodes):
        m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        p = tmp_path / name
        onnx.save(m, str(p))
        return p

    vi = helper.make_tensor_value_info
    # rank-2 input
    p = save("rank2.onnx", [vi("x", TensorProto.FLOAT, ["N", 10])], [vi("y", TensorProto.FLOAT, ["N", 10])], [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert "rank 2" in _one_line(e.value, p)
    # an image -> image model (output is the input: 3 "keypoints")
    p = save("identity.onnx", [vi("x", TensorProto.FLOAT, ["N", 3, 32, 32])], [vi("y", TensorProto.FLOAT, ["N", 3, 32, 32])], [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert "3 keypoints" in _one_line(e.value, p)
    # a classifier: [N, 1000]
    p = save("classifier.onnx", [vi("x", TensorProto.FLOAT, ["N", 3, 32, 32])], [vi("y", TensorProto.FLOAT, ["N", 3])],
             [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["y"])])
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert "neither" in _one_line(e.value, p)
    # heatmaps with an unknown keypoint count
    hm = np.zeros((21, 8, 8), np.float32)
    p = constant_heatmap_model(tmp_path / "hand21.onnx", hm, 32, 32)
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert "21 keypoints" in _one_line(e.value, p)
    # SimCC vectors that do not match the input size with one ratio
    p = constant_simcc_model(tmp_path / "simcc_bad.onnx", np.zeros((17, 96)), np.zeros((17, 100)), 64, 48)
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert "SimCC" in _one_line(e.value, p)
    # dynamic spatial size without input_size
    p = save("dyn.onnx", [vi("x", TensorProto.FLOAT, ["N", 3, "H", "W"])], [vi("y", TensorProto.FLOAT, ["N", 3, "H", "W"])], [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(InputError) as e:
        load_pose_model(p)
    assert "input_size" in _one_line(e.value, p)
    missing = tmp_path / "nope.onnx"
    with pytest.raises(InputError) as e:
        load_pose_model(missing)
    _one_line(e.value, missing)


def test_cli_refuses_a_bad_model_file(tmp_path, capsys):
    from h4d_fast.cli import main

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    assert main(["models", "info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


@pytest.mark.gpu
def test_cuda_provider_keeps_results_on_the_gpu(tmp_path):
    """With onnxruntime-gpu, the same decoded keypoints as on the CPU, returned on the GPU."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    H, W = 64, 48
    hm, *_ = _planted_heatmaps(133, 16, 12, seed=1)
    sx = np.random.default_rng(2).uniform(0, 1, (17, 96)).astype(np.float32)
    sy = np.random.default_rng(3).uniform(0, 1, (17, 128)).astype(np.float32)
    for path in (constant_heatmap_model(tmp_path / "hm.onnx", hm, H, W), constant_simcc_model(tmp_path / "sc.onnx", sx, sy, H, W, batch=4),
                 following_heatmap_model(tmp_path / "f.onnx", 17, H, W)):
        crops = torch.rand(9, 3, H, W)
        cpu = load_pose_model(path)(crops)
        model = load_pose_model(path, device="cuda")
        gpu = model(crops.cuda())
        assert gpu.device.type == "cuda" and model.device.type == "cuda"
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-4)
