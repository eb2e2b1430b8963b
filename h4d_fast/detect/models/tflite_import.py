"""Read a TensorFlow Lite flatbuffer into a plain graph description (JSON-able) and its constants.

Only what the BlazePose graphs need is read: one subgraph of float ops
(:data:`SUPPORTED_OPS`), float32 / float16 constants, sparse (``DENSIFY``) constants in CSR form.
Constant sub-graphs (``DEQUANTIZE`` of float16 weights, ``DENSIFY`` of sparse weights) are
folded here, so the description holds float32 constants and only the ops that run on
activations. The description is executed by :class:`h4d_fast.detect.models.graph.TorchGraph`.

Needs the ``tflite`` package (flatbuffer bindings of the TFLite schema) at conversion time only.

Description layout (``spec``)::

    {"format": "h4d-tflite-graph", "version": 1, "name": str,
     "inputs": [tensor id], "outputs": [tensor id],
     "tensors": {"<id>": {"name": str, "shape": [..] (TFLite layout, NHWC for 4-d)}},
     "ops": [{"op": "CONV_2D", "inputs": [id | -1], "outputs": [id], "options": {...}}],
     "constants": [tensor id]}           # arrays named "t<id>" in the weights file
                                         # (float16 where that is lossless, else float32 / int64)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError

SPEC_FORMAT = "h4d-tflite-graph"
SPEC_VERSION = 1

SUPPORTED_OPS = frozenset({
    "ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "LOGISTIC",
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "PAD", "RESHAPE", "RESIZE_BILINEAR", "RELU", "RELU6",
    "MUL",
})
"""Ops on activations that :class:`~h4d_fast.detect.models.graph.TorchGraph` executes."""

_FOLDED_OPS = frozenset({"DEQUANTIZE", "DENSIFY"})

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
_PADDING = {0: "SAME", 1: "VALID"}


def _tflite():
    try:
        import tflite  # noqa: F401
    except ImportError:
        raise ImportError(
            "reading .tflite files needs the 'tflite' package: pip install 'h4d_fast[detect]' (or pip install tflite)"
        ) from None
    return tflite


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _options(tfl, op) -> dict[str, Any]:
    """The builtin options of an operator as a plain dict (enum fields as names)."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    cls_name = _enum_names(tfl.BuiltinOptions)[op.BuiltinOptionsType()]
    obj = getattr(tfl, cls_name)()
    obj.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    for key in dir(obj):
        if not key[:1].isupper() or key in ("Init",) or key.startswith("GetRoot"):
            continue
        if key.endswith(("Length", "IsNone", "BufferHasIdentifier")) or key.endswith("AsNumpy"):
            continue
        fn = getattr(obj, key)
        if not callable(fn):
            continue
        if hasattr(obj, key + "AsNumpy"):  # a vector field
            if getattr(obj, key + "IsNone")():
                continue
            value: Any = getattr(obj, key + "AsNumpy")().tolist()
        else:
            try:
                value = fn()
            except TypeError:  # takes an index: a vector accessor already handled
                continue
            if isinstance(value, (bytes, bytearray)):
                value = value.decode()
        if key == "FusedActivationFunction":
            value = _ACTIVATIONS.get(int(value), f"UNKNOWN_{value}")
        elif key == "Padding":
            value = _PADDING.get(int(value), f"UNKNOWN_{value}")
        if isinstance(value, (bool, int, float, str, list)):
            out[key] = value
    return out


def _dtype(tfl, code: int) -> np.dtype | None:
    names = _enum_names(tfl.TensorType)
    return {"FLOAT32": np.dtype("<f4"), "FLOAT16": np.dtype("<f2"), "INT32": np.dtype("<i4"),
            "INT64": np.dtype("<i8"), "UINT8": np.dtype("u1"), "INT8": np.dtype("i1")}.get(names.get(code, ""))


def _index_vector(tfl, dim, which: str) -> np.ndarray:
    """``ArraySegments`` / ``ArrayIndices`` of a sparse dimension as an int64 array."""
    kind = getattr(dim, which + "Type")()
    table = getattr(dim, which)()
    cls = {1: tfl.Int32Vector, 2: tfl.Uint16Vector, 3: tfl.Uint8Vector}.get(kind)
    if cls is None or table is None:
        raise ValueError(f"unsupported sparse index vector type {kind}")
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: list[int], sparsity, tfl) -> np.ndarray:
    """Dense array of a sparse constant stored with TFLite ``SparsityParameters``.

    Supports the layout TFLite's converter writes for these models: traversal order equal to the
    dimension order, no block dimensions, each dimension DENSE or SPARSE_CSR.
    """
    order = sparsity.TraversalOrderAsNumpy().tolist() if not sparsity.TraversalOrderIsNone() else list(range(len(shape)))
    if order != list(range(len(shape))) or not sparsity.BlockMapIsNone() and sparsity.BlockMapLength() > 0:
        raise ValueError("block-sparse or reordered sparse tensors are not supported")
    dims = [sparsity.DimMetadata(i) for i in range(sparsity.DimMetadataLength())]
    if len(dims) != len(shape):
        raise ValueError("sparse dimension metadata does not match the tensor rank")
    dense = np.zeros(int(np.prod(shape)), values.dtype)
    # walk the dimensions; `positions` are the flat dense offsets of the current prefix, `seg`
    # the index of each prefix in the stored-value numbering of the current level
    prefix_offsets = np.zeros(1, np.int64)
    prefix_ids = np.zeros(1, np.int64)
    for level, (dim, size) in enumerate(zip(dims, shape)):
        stride = int(np.prod(shape[level + 1:])) if level + 1 < len(shape) else 1
        if dim.Format() == 0:  # DENSE
            if dim.DenseSize() != size:
                raise ValueError("dense size does not match the shape")
            j = np.arange(size, dtype=np.int64)
            prefix_offsets = (prefix_offsets[:, None] + j[None, :] * stride).reshape(-1)
            prefix_ids = (prefix_ids[:, None] * size + j[None, :]).reshape(-1)
        else:  # SPARSE_CSR: children of prefix p are indices[segments[p]:segments[p+1]]
            segments = _index_vector(tfl, dim, "ArraySegments")
            indices = _index_vector(tfl, dim, "ArrayIndices")
            counts = segments[prefix_ids + 1] - segments[prefix_ids]
            starts = segments[prefix_ids]
            rep_off = np.repeat(prefix_offsets, counts)
            child = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)]) if len(counts) else np.zeros(0, np.int64)
            prefix_offsets = rep_off + indices[child] * stride
            prefix_ids = child
    if len(prefix_offsets) != values.size:
        raise ValueError(f"sparse tensor has {values.size} values for {len(prefix_offsets)} positions")
    dense[prefix_offsets] = values.reshape(-1)
    return dense.reshape(shape)


def read_tflite(path: str | Path, name: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a ``.tflite`` file into ``(spec, constants)`` (see the module docstring).

    Raises:
        InputError: the file is missing, is not a TFLite model, or uses an op / tensor type
            outside :data:`SUPPORTED_OPS` (named in the message).
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    return parse_tflite(buf, name or path.stem, where=path)


def parse_tflite(buf: bytes, name: str, where: str | Path | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """:func:`read_tflite` on the file's bytes; ``where`` names the file in errors."""
    tfl = _tflite()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise InputError(where, "not a TensorFlow Lite model (no TFL3 identifier)")
    try:
        return _read(tfl, buf, name)
    except InputError:
        raise
    except Exception as e:  # a malformed flatbuffer surfaces as anything from struct errors to IndexError
        raise InputError(where, f"cannot read this TensorFlow Lite model: {e}") from None


def _read(tfl, buf: bytes, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    model = tfl.Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"expected one subgraph, found {model.SubgraphsLength()}")
    g = model.Subgraphs(0)
    op_names = _enum_names(tfl.BuiltinOperator)

    values: dict[int, np.ndarray] = {}  # constant tensors (folded)
    pending_sparse: dict[int, Any] = {}

    def const(tid: int) -> np.ndarray | None:
        if tid in values:
            return values[tid]
        t = g.Tensors(tid)
        b = model.Buffers(t.Buffer())
        if b is None or b.DataIsNone() or b.DataLength() == 0:
            return None
        dt = _dtype(tfl, t.Type())
        if dt is None:
            raise ValueError(f"tensor {t.Name().decode()}: unsupported type {t.Type()}")
        arr = np.frombuffer(b.DataAsNumpy().tobytes(), dtype=dt)
        shape = t.ShapeAsNumpy().tolist() if not t.ShapeIsNone() else []
        if t.Sparsity() is not None:
            pending_sparse[tid] = (arr, shape, t.Sparsity())
            return arr
        arr = arr.reshape(shape)
        values[tid] = arr
        return arr

    ops: list[dict[str, Any]] = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        opname = op_names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "UNKNOWN")
        if opname == "CUSTOM":
            opname = "CUSTOM:" + (oc.CustomCode() or b"").decode()
        ins = op.InputsAsNumpy().tolist()
        outs = op.OutputsAsNumpy().tolist()
        if opname in _FOLDED_OPS:
            src = const(ins[0])
            if src is None:
                raise ValueError(f"{opname} on a non-constant tensor is not supported")
            if opname == "DENSIFY":
                arr, shape, sp = pending_sparse.pop(ins[0])
                values[outs[0]] = densify(arr, shape, sp, tfl)
            else:
                values[outs[0]] = np.asarray(values[ins[0]], np.float32)
            continue
        if opname not in SUPPORTED_OPS:
            raise ValueError(f"op {opname} is not supported")
        for tid in ins:
            if tid >= 0:
                const(tid)
        ops.append({"op": opname, "inputs": ins, "outputs": outs, "options": _options(tfl, op)})

    used = {t for o in ops for t in o["inputs"] + o["outputs"] if t >= 0}
    inputs = g.InputsAsNumpy().tolist()
    outputs = g.OutputsAsNumpy().tolist()
    used |= set(inputs) | set(outputs)
    tensors = {}
    for tid in sorted(used):
        t = g.Tensors(tid)
        tensors[str(tid)] = {"name": t.Name().decode(), "shape": t.ShapeAsNumpy().tolist() if not t.ShapeIsNone() else []}
    constants = sorted(t for t in used if t in values)
    arrays = {}
    for tid in constants:
        a = values[tid]
        if a.dtype.kind == "f":
            a32 = a.astype(np.float32)
            a16 = a32.astype(np.float16)  # the weights were float16 in the file: keep them so when lossless
            arrays[f"t{tid}"] = np.ascontiguousarray(a16 if np.array_equal(a16.astype(np.float32), a32) else a32)
        else:
            arrays[f"t{tid}"] = np.ascontiguousarray(a.astype(np.int64))
    spec = {"format": SPEC_FORMAT, "version": SPEC_VERSION, "name": name, "inputs": inputs, "outputs": outputs,
            "tensors": tensors, "ops": ops, "constants": constants}
    return spec, arrays


__all__ = ["SPEC_FORMAT", "SPEC_VERSION", "SUPPORTED_OPS", "densify", "parse_tflite", "read_tflite"]
