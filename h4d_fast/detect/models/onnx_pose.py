"""Top-down ONNX pose models a user brings (RTMPose, DWPose, ViTPose, HRNet as exported by mmpose
or used by rtmlib), run with ONNX Runtime.

What is read from the file (a probe run on one zero crop at load time):

* input: one ``[N, 3, H, W]`` float tensor; ``H, W`` from its static shape (or ``input_size=``);
  a static batch dimension > 1 or of 1 is honoured by running in chunks of that size.
* head, from the outputs:
  - **heatmaps**: one ``[N, K, h, w]`` output. Decoded by argmax per keypoint, moved a quarter
    cell towards the higher neighbour on each axis, confidence = the peak value. Cell -> crop
    pixel: ``codec="udp"`` (default; ViTPose and the UDP HRNets) ``x = c (W-1)/(w-1)``;
    ``codec="msra"`` (classic HRNet / SimpleBaseline) ``x = c W/w``.
  - **SimCC**: two ``[N, K, L]`` outputs (x then y, or named ``*x*`` / ``*y*``), ``L_x / W ==
    L_y / H`` = the split ratio (2.0 for RTMPose / DWPose). ``x = argmax_x / ratio``,
    confidence = ``min(max_x, max_y)`` (mmpose's rule).
  Confidences are clipped to ``[0, 1]``.
* keypoints: ``K`` = 17 (COCO) or 133 (COCO-WholeBody, whose first 17 are COCO's); others are
  refused.

Normalisation: ``mean=`` / ``std=`` (on 0-255 values) and ``bgr=`` when given; else the file's
metadata entries ``mean`` / ``std`` (three numbers, comma- or space-separated, brackets allowed)
and ``bgr`` / ``to_rgb`` when present; else mmpose's default ``mean = (123.675, 116.28, 103.53)``,
``std = (58.395, 57.12, 57.375)`` on RGB.

Device: with ``device="cuda"`` and ONNX Runtime's CUDA provider available, the model runs on the
GPU and crops / outputs stay on the GPU (I/O binding on torch buffers); else on the CPU (crops are
copied to the host). ONNX Runtime blocks until the result is ready (one sync per batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ...errors import BackendUnavailable, InputError

MMPOSE_MEAN = (123.675, 116.28, 103.53)
MMPOSE_STD = (58.395, 57.12, 57.375)
KNOWN_KEYPOINTS = {17: "COCO-17", 133: "COCO-WholeBody-133"}
BOX_SCALE = 1.25
"""mmpose's top-down crops enlarge the person box by 1.25 (``padding=1.25``)."""


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("ONNX pose models need onnxruntime: pip install 'h4d_fast[detect]' "
                                 "(or onnxruntime-gpu on a CUDA machine)") from None
    return ort


def decode_heatmaps(heatmaps: Tensor, input_size: tuple[int, int], codec: str = "udp") -> Tensor:
    """``[N, K, h, w]`` heatmaps -> ``[N, K, 3]`` ``x, y`` in crop pixels and the peak value.

    Argmax per keypoint, then a quarter-cell step towards the larger neighbour on each axis
    (where both neighbours exist); see the module docstring for the cell -> pixel scale.
    """
    N, K, h, w = heatmaps.shape
    H, W = input_size
    flat = heatmaps.reshape(N, K, h * w).float()
    peak, idx = flat.max(-1)
    cx = (idx % w).float()
    cy = torch.div(idx, w, rounding_mode="floor").float()
    ix, iy = idx % w, torch.div(idx, w, rounding_mode="floor")

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return torch.gather(flat, 2, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))[..., None])[..., 0]

    inner_x = (ix > 0) & (ix < w - 1)
    inner_y = (iy > 0) & (iy < h - 1)
    dx = torch.sign(at(iy, ix + 1) - at(iy, ix - 1)) * inner_x
    dy = torch.sign(at(iy + 1, ix) - at(iy - 1, ix)) * inner_y
    cx = cx + 0.25 * dx
    cy = cy + 0.25 * dy
    if codec == "udp":
        sx, sy = (W - 1) / max(w - 1, 1), (H - 1) / max(h - 1, 1)
    elif codec == "msra":
        sx, sy = W / w, H / h
    else:
        raise ValueError(f"unknown heatmap codec {codec!r} (udp or msra)")
    return torch.stack([cx * sx, cy * sy, peak.clamp(0.0, 1.0)], -1)


def decode_simcc(simcc_x: Tensor, simcc_y: Tensor, split_ratio: float) -> Tensor:
    """``[N, K, Lx]``, ``[N, K, Ly]`` -> ``[N, K, 3]``: argmax / split ratio and ``min`` of the
    two maxima, clipped to ``[0, 1]``."""
    mx, ix = simcc_x.float().max(-1)
    my, iy = simcc_y.float().max(-1)
    conf = torch.minimum(mx, my).clamp(0.0, 1.0)
    return torch.stack([ix.float() / split_ratio, iy.float() / split_ratio, conf], -1)


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxPoseModel:
    """A top-down ONNX pose model as a :class:`~h4d_fast.detect.api.PoseModel` (see the module docstring).

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"`` or a CUDA device (CUDA provider of onnxruntime-gpu).
        input_size: ``(H, W)`` when the file's input shape is dynamic.
        mean, std: per-channel normalisation on 0-255 values (RGB order unless ``bgr``).
        bgr: the model takes BGR.
        codec: heatmap cell -> pixel convention, ``"udp"`` or ``"msra"``.
        box_scale: person box enlargement before cropping (mmpose: 1.25).
        max_batch: crops per ONNX Runtime call when the batch dimension is dynamic.
    Raises:
        InputError: the file is not ONNX, or not a top-down pose model (names the file and why).
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", input_size: Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool | None = None,
                 codec: str = "udp", box_scale: float = BOX_SCALE, max_batch: int = 256):
        self.path = Path(path)
        self.name = self.path.stem
        self.box_scale = float(box_scale)
        self.codec = codec
        if codec not in ("udp", "msra"):
            raise ValueError(f"codec must be 'udp' or 'msra', not {codec!r}")
        self.max_batch = int(max_batch)
        if not self.path.is_file():
            raise InputError(self.path, "no such model file")
        self._ort = _ort()
        self.device = torch.device("cpu")
        self._session = None
        self._input_size_arg = tuple(int(v) for v in input_size) if input_size is not None else None
        self._mean = self._std = torch.zeros(1, 3, 1, 1)
        self.to(device)
        meta = self._session.get_modelmeta().custom_metadata_map or {}
        mean = mean if mean is not None else self._meta_triple(meta, "mean") or MMPOSE_MEAN
        std = std if std is not None else self._meta_triple(meta, "std") or MMPOSE_STD
        if bgr is None:
            flag = (meta.get("bgr") or "").strip().lower()
            to_rgb = (meta.get("to_rgb") or "").strip().lower()
            bgr = flag in ("1", "true", "yes") or to_rgb in ("0", "false", "no")
        self.bgr = bool(bgr)
        if len(mean) != 3 or len(std) != 3 or any(float(v) == 0 for v in std):
            raise ValueError(f"{self.path}: mean and std need three values each (std non-zero)")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    def _meta_triple(self, meta: dict[str, str], key: str) -> tuple[float, ...] | None:
        text = meta.get(key)
        if text is None:
            return None
        try:
            vals = tuple(float(v) for v in text.replace("[", " ").replace("]", " ").replace("(", " ").replace(")", " ").replace(",", " ").split())
        except ValueError:
            raise InputError(self.path, f"metadata {key!r} is not three numbers: {text[:60]!r}", field=key) from None
        if len(vals) != 3 or (key == "std" and 0.0 in vals):
            raise InputError(self.path, f"metadata {key!r} is not three numbers{' (non-zero)' if key == 'std' else ''}: {text[:60]!r}", field=key)
        return vals

    # -- loading and validation -------------------------------------------------------------
    def _open(self, providers: list[str]) -> Any:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(self.path, f"not a loadable ONNX model ({msg[:200]})") from None

    def _inspect(self) -> None:
        s = self._session
        ins = s.get_inputs()
        if len(ins) != 1:
            raise InputError(self.path, f"a top-down pose model has one input (an image batch); this one has {len(ins)}")
        inp = ins[0]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise InputError(self.path, f"input {inp.name!r} has rank {len(shape)}; a pose model takes [N, 3, H, W]", field="input")
        if _static(shape[1]) not in (None, 3):
            raise InputError(self.path, f"input {inp.name!r} has {shape[1]} channels; a pose model takes 3 (RGB / BGR)", field="input")
        if "float" not in inp.type:
            raise InputError(self.path, f"input {inp.name!r} is {inp.type}; expected a float tensor", field="input")
        H, W = _static(shape[2]), _static(shape[3])
        if self._input_size_arg is not None:
            if (H is not None and H != self._input_size_arg[0]) or (W is not None and W != self._input_size_arg[1]):
                raise InputError(self.path, f"input_size {self._input_size_arg} differs from the model's {H}x{W}", field="input")
            H, W = self._input_size_arg
        if H is None or W is None:
            raise InputError(self.path, f"input {inp.name!r} has a dynamic size {shape[2:]}; give input_size=(H, W)", field="input")
        self.input_size = (int(H), int(W))
        self._input_name = inp.name
        self._input_float16 = "float16" in inp.type
        self._fixed_batch = _static(shape[0])
        # probe: one zero crop tells the output shapes whatever the file declares
        probe = np.zeros((self._fixed_batch or 1, 3, H, W), np.float16 if self._input_float16 else np.float32)
        try:
            outs = s.run(None, {inp.name: probe})
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(self.path, f"cannot run on a {H}x{W} crop ({msg[:200]})") from None
        names = [o.name for o in s.get_outputs()]
        shapes = {n: tuple(o.shape) for n, o in zip(names, outs)}
        self._head, self._outputs, K = self._classify(names, shapes)
        self.num_keypoints = K
        # per-crop output shapes and types, for output buffers bound on the GPU
        self._out_shapes = {n: shapes[n][1:] for n in self._outputs}
        self._out_f16 = {o.name: "float16" in o.type for o in s.get_outputs()}

    def _classify(self, names: list[str], shapes: dict[str, tuple[int, ...]]) -> tuple[str, list[str], int]:
        H, W = self.input_size
        rank4 = [n for n in names if len(shapes[n]) == 4]
        rank3 = [n for n in names if len(shapes[n]) == 3]
        if len(rank4) == 1 and not rank3:
            n = rank4[0]
            K, h, w = shapes[n][1:]
            if K not in KNOWN_KEYPOINTS:
                raise InputError(self.path, f"heatmap output {n!r} has {K} keypoints; supported: 17 (COCO) or 133 (COCO-WholeBody)", field="outputs")
            if not (2 <= h <= H and 2 <= w <= W):
                raise InputError(self.path, f"output {n!r} of shape {shapes[n]} is not a heatmap of a {H}x{W} crop", field="outputs")
            return "heatmap", [n], K
        if len(rank3) == 2 and not rank4:
            a, b = rank3
            lx = [n for n in rank3 if n.lower().endswith("x")]
            ly = [n for n in rank3 if n.lower().endswith("y")]
            if len(lx) == 1 and len(ly) == 1 and lx != ly:
                a, b = lx[0], ly[0]
            Ka, La = shapes[a][1:]
            Kb, Lb = shapes[b][1:]
            if Ka != Kb:
                raise InputError(self.path, f"SimCC outputs {a!r}, {b!r} disagree on the keypoint count ({Ka} vs {Kb})", field="outputs")
            if Ka not in KNOWN_KEYPOINTS:
                raise InputError(self.path, f"SimCC outputs have {Ka} keypoints; supported: 17 (COCO) or 133 (COCO-WholeBody)", field="outputs")
            rx, ry = La / W, Lb / H
            if abs(rx - ry) > 1e-6 or rx < 1.0:
                raise InputError(self.path, f"SimCC outputs of length {La} (x) and {Lb} (y) do not match the {H}x{W} input "
                                 "with one split ratio >= 1", field="outputs")
            self.split_ratio = rx
            return "simcc", [a, b], Ka
        desc = ", ".join(f"{n} {list(shapes[n])}" for n in names)
        raise InputError(self.path, f"outputs are neither one heatmap [N, K, h, w] nor two SimCC vectors [N, K, L]: {desc}", field="outputs")

    def to(self, device: torch.device | str) -> "OnnxPoseModel":
        device = torch.device(device)
        avail = self._ort.get_available_providers()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in avail:
                raise BackendUnavailable(f"{self.path}: running an ONNX pose model on CUDA needs onnxruntime-gpu (this onnxruntime "
                                         f"has {', '.join(avail)}); install it or use device='cpu'")
            idx = device.index if device.index is not None else torch.cuda.current_device()
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
            device = torch.device("cuda", idx)
        else:
            providers = ["CPUExecutionProvider"]
        if self._session is None or device != self.device:
            self._session = self._open(providers)
            self.device = device
            self._inspect()
        self._mean = self._mean.to(device)
        self._std = self._std.to(device)
        return self

    # -- inference ------------------------------------------------------------------------
    def _normalise(self, crops: Tensor) -> Tensor:
        x = crops.to(self.device, torch.float32)
        if self.bgr:
            x = x.flip(1)
        x = (x * 255.0 - self._mean) / self._std
        return x.half() if self._input_float16 else x.contiguous()

    def _run(self, x: Tensor) -> list[Tensor]:
        if self.device.type == "cuda":
            return self._run_cuda(x)
        outs = self._session.run(self._outputs, {self._input_name: x.numpy()})
        return [torch.from_numpy(np.asarray(o)) for o in outs]

    def _run_cuda(self, x: Tensor) -> list[Tensor]:
        s = self._session
        binding = s.io_binding()
        x = x.contiguous()
        elem = np.float16 if x.dtype == torch.float16 else np.float32
        binding.bind_input(self._input_name, "cuda", self.device.index or 0, elem, list(x.shape), x.data_ptr())
        outs = []
        for n in self._outputs:  # torch-owned output buffers: results stay on the GPU
            f16 = self._out_f16[n]
            buf = torch.empty((x.shape[0],) + tuple(self._out_shapes[n]), device=self.device, dtype=torch.float16 if f16 else torch.float32)
            binding.bind_output(n, "cuda", self.device.index or 0, np.float16 if f16 else np.float32, list(buf.shape), buf.data_ptr())
            outs.append(buf)
        torch.cuda.current_stream(self.device).synchronize()  # x was written on torch's stream
        s.run_with_iobinding(binding)  # returns when the outputs are written
        return outs

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        step = self._fixed_batch or self.max_batch
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def keypoints_native(self, crops: Tensor) -> Tensor:
        """``[N, 3, H, W]`` crops in ``[0, 1]`` -> ``[N, K, 3]`` all keypoints of the model (crop pixels, confidence)."""
        if crops.dim() != 4 or crops.shape[1] != 3 or tuple(crops.shape[2:]) != self.input_size:
            raise ValueError(f"{self.name}: expected crops [N, 3, {self.input_size[0]}, {self.input_size[1]}], got {tuple(crops.shape)}")
        N = crops.shape[0]
        if N == 0:
            return torch.zeros(0, self.num_keypoints, 3, device=self.device)
        x = self._normalise(crops)
        parts = []
        for a, b in self._chunks(N):
            xb = x[a:b]
            if self._fixed_batch and b - a < self._fixed_batch:  # pad the last chunk to the static batch
                xb = torch.cat([xb, xb.new_zeros((self._fixed_batch - (b - a),) + tuple(xb.shape[1:]))])
            outs = [o[: b - a].to(self.device) for o in self._run(xb)]
            if self._head == "heatmap":
                parts.append(decode_heatmaps(outs[0], self.input_size, self.codec))
            else:
                parts.append(decode_simcc(outs[0], outs[1], self.split_ratio))
        return torch.cat(parts)

    def __call__(self, crops: Tensor) -> Tensor:
        """``[N, 3, H, W]`` RGB crops in ``[0, 1]`` -> ``[N, 17, 3]`` COCO-17 (crop pixels, confidence)."""
        return self.keypoints_native(crops)[:, :17]


__all__ = ["MMPOSE_MEAN", "MMPOSE_STD", "OnnxPoseModel", "decode_heatmaps", "decode_simcc"]
