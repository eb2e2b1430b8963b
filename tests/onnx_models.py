"""Small ONNX pose models built in the tests (no download): constant heatmap / SimCC heads and a
heatmap that follows the crop's first channel, on a dynamic or fixed batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(path: Path, nodes, inputs, outputs, inits, metadata: dict[str, str] | None = None) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "pose", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


def _input(H: int, W: int, batch):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, H, W])


def _zero_of_input(prefix: str = "z"):
    """Nodes computing ``0 * sum(input)`` as ``[N, 1, 1]`` (ties an output to the batch)."""
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int64), f"{prefix}_axes"),
             numpy_helper.from_array(np.zeros((), np.float32), f"{prefix}_zero")]
    nodes = [helper.make_node("ReduceSum", ["input", f"{prefix}_axes"], [f"{prefix}_s"], keepdims=1),
             helper.make_node("Mul", [f"{prefix}_s", f"{prefix}_zero"], [f"{prefix}_n"])]
    return nodes, inits, f"{prefix}_n"  # [N, 1, 1, 1]


def constant_heatmap_model(path: Path, heatmaps: np.ndarray, H: int, W: int, batch="N") -> Path:
    """Outputs ``heatmaps`` ``[K, h, w]`` for every crop of an ``[N, 3, H, W]`` input."""
    from onnx import TensorProto, helper, numpy_helper

    K, h, w = heatmaps.shape
    nodes, inits, zero = _zero_of_input()
    inits.append(numpy_helper.from_array(heatmaps[None].astype(np.float32), "hm_const"))
    nodes.append(helper.make_node("Add", [zero, "hm_const"], ["heatmaps"]))
    out = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, K, h, w])
    return _save(path, nodes, [_input(H, W, batch)], [out], inits)


def constant_simcc_model(path: Path, sx: np.ndarray, sy: np.ndarray, H: int, W: int, batch="N",
                         names=("simcc_x", "simcc_y")) -> Path:
    """Outputs ``sx`` ``[K, Lx]`` and ``sy`` ``[K, Ly]`` (named ``names``) for every crop."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, zero = _zero_of_input()
    axes = numpy_helper.from_array(np.array([3], np.int64), "sq_axes")
    inits += [axes, numpy_helper.from_array(sx[None].astype(np.float32), "sx_c"), numpy_helper.from_array(sy[None].astype(np.float32), "sy_c")]
    nodes.append(helper.make_node("Squeeze", [zero, "sq_axes"], ["z3"]))  # [N, 1, 1]
    nodes.append(helper.make_node("Add", ["z3", "sx_c"], [names[0]]))
    nodes.append(helper.make_node("Add", ["z3", "sy_c"], [names[1]]))
    outs = [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [batch, sx.shape[0], sx.shape[1]]),
            helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [batch, sy.shape[0], sy.shape[1]])]
    return _save(path, nodes, [_input(H, W, batch)], outs, inits)


def following_heatmap_model(path: Path, K: int, H: int, W: int, stride: int = 4, batch="N",
                            metadata: dict[str, str] | None = None) -> Path:
    """Heatmaps = the crop's first channel (after normalisation), average-pooled by ``stride``,
    repeated over ``K`` keypoints: a bright spot in a crop is every keypoint's peak."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([1], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"), numpy_helper.from_array(np.array([1, K, 1, 1], np.int64), "rep")]
    nodes = [helper.make_node("Slice", ["input", "s0", "s1", "ax"], ["c0"]),
             helper.make_node("AveragePool", ["c0"], ["pooled"], kernel_shape=[stride, stride], strides=[stride, stride]),
             helper.make_node("Tile", ["pooled", "rep"], ["heatmaps"])]
    out = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, K, H // stride, W // stride])
    return _save(path, nodes, [_input(H, W, batch)], [out], inits, metadata)
