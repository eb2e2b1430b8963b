"""Run a converted TFLite graph (:mod:`.tflite_import`) with torch ops: channels first, batched, any device.

4-d activations are held as ``[B, C, H, W]`` (TFLite holds ``[1, H, W, C]``); every op maps its
NHWC semantics onto that layout (weights are re-laid once, at construction). The batch
dimension of the graph (1 in the file) is free. Outputs keep the graph's order; 4-d outputs are
``[B, C, H, W]`` (:func:`to_tflite_layout` gives the file's NHWC layout back).

Files (the cache): ``<name>.json`` (the spec) + ``<name>.npz`` (constants ``t<id>``, read with
``allow_pickle=False``). :func:`load_graph` turns a corrupt or foreign file into an InputError.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from ...io.atomic import atomic_path, write_json
from .tflite_import import SPEC_FORMAT, SPEC_VERSION, SUPPORTED_OPS

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _act(x: Tensor, name: str) -> Tensor:
    """A fused activation, in place (``x`` is always the fresh output of the op it is fused to)."""
    if name == "NONE":
        return x
    if name == "RELU":
        return torch.relu_(x)
    if name == "RELU6":
        return F.hardtanh(x, 0.0, 6.0, inplace=True)
    if name == "RELU_N1_TO_1":
        return F.hardtanh(x, -1.0, 1.0, inplace=True)
    if name == "TANH":
        return torch.tanh(x)
    raise ValueError(f"unsupported fused activation {name}")


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding (the extra pixel goes after)."""
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, k: tuple[int, int], stride: tuple[int, int], dil: tuple[int, int], value: float = 0.0) -> Tensor:
    ph = _same_pads(x.shape[2], k[0], stride[0], dil[0])
    pw = _same_pads(x.shape[3], k[1], stride[1], dil[1])
    if ph == (0, 0) and pw == (0, 0):
        return x
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)


class TorchGraph(nn.Module):
    """A converted TFLite graph as a torch module.

    ``forward(*inputs)``: each input ``[B, C, H, W]`` for a 4-d graph input (else the graph's
    shape with a free batch) -> list of outputs in the graph's order (4-d ones as ``[B, C, H, W]``).
    """

    def __init__(self, spec: dict[str, Any], constants: dict[str, np.ndarray]):
        super().__init__()
        self.spec = spec
        self.ops = spec["ops"]
        self.inputs = list(spec["inputs"])
        self.outputs = list(spec["outputs"])
        self.shapes = {int(k): v["shape"] for k, v in spec["tensors"].items()}
        self.consts: dict[int, Tensor] = {}
        for tid in spec["constants"]:
            t = torch.from_numpy(np.array(constants[f"t{tid}"]))
            self.consts[int(tid)] = t.float() if t.is_floating_point() else t
        # re-lay conv weights once: OHWI -> OIHW; depthwise 1HW(C*M) -> (C*M)1HW
        relaid: dict[int, str] = {}
        for o in self.ops:
            if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = o["inputs"][1]
                if relaid.setdefault(w, o["op"]) != o["op"]:
                    raise ValueError(f"tensor {w} is the weight of two kinds of convolution")
        for w, kind in relaid.items():
            perm = (0, 3, 1, 2) if kind == "CONV_2D" else (3, 0, 1, 2)
            self.consts[w] = self.consts[w].permute(*perm).contiguous()
        # integer constants (pads, sizes, shapes) read on the host as Python lists: reading them
        # back from the device at every call would synchronise the stream
        self._host: dict[int, list] = {tid: t.tolist() for tid, t in self.consts.items() if not t.is_floating_point()}
        for tid, t in self.consts.items():
            self.register_buffer(f"t{tid}", t, persistent=False)
        del self.consts
        self._plan_padding()
        self._ops_for: dict[tuple[int, ...], list[dict[str, Any]]] = {}

    def _plan_padding(self) -> None:
        """Padding folded into the convolutions where it is symmetric (one kernel instead of a
        pad + a convolution): a convolution's SAME padding, and a spatial-only symmetric PAD whose
        only consumer is a VALID convolution / depthwise convolution."""
        consumers: dict[int, int] = {}
        for o in self.ops:
            for t in o["inputs"]:
                consumers[t] = consumers.get(t, 0) + 1
        for t in self.outputs:
            consumers[t] = consumers.get(t, 0) + 1
        producer = {o["outputs"][0]: o for o in self.ops}
        for o in self.ops:
            o.pop("_conv_pad", None)
            o.pop("_skip", None)
        for o in self.ops:
            if o["op"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            opt = o["options"]
            kh, kw = self.shapes[o["inputs"][1]][1:3]
            n, h, w, c = self.shapes[o["inputs"][0]]
            if opt.get("Padding") == "SAME":
                ph = _same_pads(h, kh, opt.get("StrideH", 1), opt.get("DilationHFactor", 1))
                pw = _same_pads(w, kw, opt.get("StrideW", 1), opt.get("DilationWFactor", 1))
                if ph[0] == ph[1] and pw[0] == pw[1]:
                    o["_conv_pad"] = (ph[0], pw[0])
                continue
            src = producer.get(o["inputs"][0])
            if src is None or src["op"] != "PAD" or consumers.get(o["inputs"][0], 0) != 1:
                continue
            pads = self._host_const(src["inputs"][1])
            if len(pads) != 4 or pads[0] != [0, 0] or pads[3] != [0, 0] or pads[1][0] != pads[1][1] or pads[2][0] != pads[2][1]:
                continue
            src["_skip"] = True  # the convolution reads the PAD's input and pads itself
            o["_conv_pad"] = (pads[1][0], pads[2][0])
            o["_conv_src"] = src["inputs"][0]

    def _const(self, tid: int) -> Tensor:
        return getattr(self, f"t{tid}")

    def _host_const(self, tid: int) -> list:
        """An integer constant as a Python list (no device read)."""
        if tid in self._host:
            return self._host[tid]
        return self._const(tid).tolist()

    def _value(self, env: dict[int, Tensor], tid: int) -> Tensor:
        if tid in env:
            return env[tid]
        return self._const(tid)

    def _const_nchw(self, tid: int, like: Tensor) -> Tensor:
        """A constant operand of an elementwise op, broadcastable against an NCHW activation."""
        c = self._const(tid).to(like.dtype)
        if like.dim() == 4:
            if c.dim() == 1:
                return c.view(1, -1, 1, 1)
            if c.dim() == 4:
                return c.permute(0, 3, 1, 2)
        return c

    def ops_for(self, outputs: tuple[int, ...]) -> list[dict[str, Any]]:
        """The ops (in order) that the graph outputs at positions ``outputs`` depend on."""
        key = tuple(outputs)
        if key not in self._ops_for:
            need = {self.outputs[i] for i in key}
            keep = []
            for o in reversed(self.ops):
                if o["outputs"][0] in need:
                    keep.append(o)
                    need.update(t for t in o["inputs"] if t >= 0)
                    if "_conv_src" in o:
                        need.add(o["_conv_src"])
            self._ops_for[key] = [o for o in reversed(keep) if not o.get("_skip")]
        return self._ops_for[key]

    def forward(self, *inputs: Tensor, outputs: tuple[int, ...] | None = None) -> list[Tensor]:
        """Run the graph; ``outputs``: positions of the graph outputs wanted (default all; ops
        feeding only other outputs are not run)."""
        want = tuple(range(len(self.outputs))) if outputs is None else tuple(outputs)
        env: dict[int, Tensor] = dict(zip(self.inputs, inputs))
        for o in self.ops_for(want):
            env[o["outputs"][0]] = self._run(o, env)
        return [env[t] if t in env else self._const(t) for t in (self.outputs[i] for i in want)]

    def _run(self, o: dict[str, Any], env: dict[int, Tensor]) -> Tensor:  # noqa: C901 - one branch per op
        op, ins, opt = o["op"], o["inputs"], o["options"]
        x = self._value(env, o.get("_conv_src", ins[0]))
        act = opt.get("FusedActivationFunction", "NONE")
        if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = self._const(ins[1])
            b = self._const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            stride = (opt.get("StrideH", 1), opt.get("StrideW", 1))
            dil = (opt.get("DilationHFactor", 1), opt.get("DilationWFactor", 1))
            pad = o.get("_conv_pad", (0, 0))
            if opt.get("Padding") == "SAME" and "_conv_pad" not in o:
                x = _pad_same(x, (w.shape[2], w.shape[3]), stride, dil)
            groups = x.shape[1] if op == "DEPTHWISE_CONV_2D" else 1
            return _act(F.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil, groups=groups), act)
        if op in ("ADD", "MUL"):
            y = self._value(env, ins[1]) if ins[1] in env else self._const_nchw(ins[1], x)
            if ins[0] not in env:
                x = self._const_nchw(ins[0], y)
            return _act(x + y if op == "ADD" else x * y, act)
        if op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            k = (opt["FilterHeight"], opt["FilterWidth"])
            stride = (opt.get("StrideH", 1), opt.get("StrideW", 1))
            if op == "MAX_POOL_2D":
                if opt.get("Padding") == "SAME":
                    x = _pad_same(x, k, stride, (1, 1), value=float("-inf"))
                return _act(F.max_pool2d(x, k, stride), act)
            if opt.get("Padding") == "SAME" and _pad_same(x, k, stride, (1, 1)) is not x:
                raise ValueError("AVERAGE_POOL_2D with SAME padding is not supported")
            return _act(F.avg_pool2d(x, k, stride), act)
        if op == "PAD":
            p = self._host_const(ins[1])  # [[before, after]] per NHWC dim
            if len(p) == 4:
                (nb, na), (hb, ha), (wb, wa), (cb, ca) = p
                return F.pad(x, (wb, wa, hb, ha, cb, ca, nb, na))
            flat = [v for pair in reversed(p) for v in pair]
            return F.pad(x, flat)
        if op == "RESIZE_BILINEAR":
            size = [int(v) for v in self._host_const(ins[1])]
            ac, hp = bool(opt.get("AlignCorners", False)), bool(opt.get("HalfPixelCenters", False))
            if not (ac or hp):
                raise ValueError("RESIZE_BILINEAR without half-pixel centres or aligned corners is not supported")
            return F.interpolate(x, size=size, mode="bilinear", align_corners=ac)
        if op == "DEPTH_TO_SPACE":
            bs = int(opt["BlockSize"])
            B, C, H, W = x.shape
            c = C // (bs * bs)  # TF channel order is (row offset, column offset, channel)
            return x.reshape(B, bs, bs, c, H, W).permute(0, 3, 4, 1, 5, 2).reshape(B, c, H * bs, W * bs)
        if op == "RESHAPE":
            shape = self.shapes[o["outputs"][0]]
            if x.dim() == 4:
                x = x.permute(0, 2, 3, 1)
            y = x.reshape([x.shape[0]] + list(shape[1:]))
            return y.permute(0, 3, 1, 2) if y.dim() == 4 else y
        if op == "CONCATENATION":
            parts = [self._value(env, t) for t in ins]
            axis = int(opt.get("Axis", 0))
            rank = len(self.shapes[o["outputs"][0]])
            axis = axis % rank
            if rank == 4:
                axis = _NHWC_TO_NCHW_AXIS[axis]
            return _act(torch.cat(parts, dim=axis), act)
        if op == "LOGISTIC":
            return torch.sigmoid(x)
        if op == "RELU":
            return torch.relu(x)
        if op == "RELU6":
            return F.hardtanh(x, 0.0, 6.0)
        raise ValueError(f"unsupported op {op}")


def to_tflite_layout(t: Tensor) -> Tensor:
    """An output of :class:`TorchGraph` in the TFLite file's layout (NHWC for 4-d)."""
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


def save_graph(folder: str | Path, name: str, spec: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """Write ``<folder>/<name>.json`` and ``<name>.npz`` atomically. Returns both paths."""
    folder = Path(folder)
    npz = folder / f"{name}.npz"
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **constants)
    js = folder / f"{name}.json"
    write_json(js, spec, indent=None)
    for p in (npz, js):
        _umask_mode(p)
    return js, npz


def _umask_mode(path: Path) -> None:
    """Atomic writes create private (0600) files; a shared cache wants the umask's mode."""
    import contextlib
    import os

    with contextlib.suppress(OSError):
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)


def load_graph(folder: str | Path, name: str) -> TorchGraph:
    """Load ``<folder>/<name>.json`` + ``.npz`` written by :func:`save_graph`.

    Raises:
        InputError: a file is missing, corrupt, or not a converted graph (names the file).
    """
    folder = Path(folder)
    js, npz = folder / f"{name}.json", folder / f"{name}.npz"
    try:
        spec = json.loads(js.read_text())
    except OSError as e:
        raise InputError(js, f"cannot read ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(js, f"not a converted model graph (bad JSON: {e})") from None
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise InputError(js, f"not a converted model graph (format is not {SPEC_FORMAT!r})")
    if spec.get("version") != SPEC_VERSION:
        raise InputError(js, f"converted with another version ({spec.get('version')}, expected {SPEC_VERSION}); rebuild it", field="version")
    try:
        for o in spec["ops"]:
            if o["op"] not in SUPPORTED_OPS:
                raise InputError(js, f"unsupported op {o['op']!r}", field="ops")
        wanted = [f"t{t}" for t in spec["constants"]]
        [spec[k] for k in ("inputs", "outputs", "tensors")]
    except (KeyError, TypeError) as e:
        raise InputError(js, f"not a converted model graph (missing {e})") from None
    try:
        with np.load(npz, allow_pickle=False) as z:
            missing = [k for k in wanted if k not in z.files]
            if missing:
                raise InputError(npz, f"constants missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
            constants = {k: z[k] for k in wanted}
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(npz, "missing (rebuild the converted model)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(npz, f"not a readable weights file ({e})") from None
    try:
        return TorchGraph(spec, constants)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise InputError(js, f"graph does not match its weights ({e})") from None


__all__ = ["TorchGraph", "load_graph", "save_graph", "to_tflite_layout"]
