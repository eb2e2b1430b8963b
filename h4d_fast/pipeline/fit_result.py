"""What a fit returns (:class:`FitResult`), the meshes and joints of a fit, and the CPU-thread scope of a fit (split from :mod:`h4d_fast.pipeline.fit`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ..body.fast import FastBody
from ..body.model import BodyModel
from ..constants import NUM_SMPL_JOINTS

NUM_BODY_POSE = 3 * (NUM_SMPL_JOINTS - 1)


_PARAM_KEYS: tuple[str, ...] = ("global_orient", "body_pose", "betas", "transl")


@dataclass
class FitResult:
    """Fitted SMPL parameters of a sequence (tensors on the fitting device, detached).

    Attributes:
        global_orient: ``[F, P, 3]`` axis-angle.
        body_pose: ``[F, P, 69]`` axis-angle of joints 1..23.
        betas: ``[P, K]`` one shape per person.
        transl: ``[F, P, 3]`` metres.
        stats: per stage/epoch losses, iterations, evaluations, seconds; penetration before and
            after the collision stage (cm^3 per frame); ``kp_error_mm`` (mean distance of the
            fitted COCO joints to the valid keypoints); ``penetration_reduction`` when compared.
        collision_off: with ``compare_collision``, the parameters of the same fit whose collision
            stage ran with the collision weight 0 (``global_orient``, ``body_pose``, ``betas``,
            ``transl``), so that accuracy with and without the collision term can be compared.
        present: ``[F, P]`` bool, who was fitted in which frame (None: everyone everywhere). An
            absent person-frame has no body: its ``global_orient``, ``body_pose`` and ``transl``
            are zeros, and the export writes nothing for it.
    """

    global_orient: Tensor
    body_pose: Tensor
    betas: Tensor
    transl: Tensor
    stats: dict[str, Any] = field(default_factory=dict)
    collision_off: dict[str, Tensor] | None = None
    present: Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.global_orient.shape[0])

    @property
    def num_people(self) -> int:
        return int(self.global_orient.shape[1])

    def as_arrays(self) -> dict[str, np.ndarray]:
        """float32 numpy copies (for caching); ``collision_off`` under keys prefixed ``off_``."""
        out = {k: getattr(self, k).detach().float().cpu().numpy() for k in _PARAM_KEYS}
        if self.collision_off is not None:
            out.update({f"off_{k}": self.collision_off[k].detach().float().cpu().numpy() for k in _PARAM_KEYS})
        if self.present is not None:
            out["present"] = self.present.detach().cpu().numpy().astype(bool)
        return out

    @staticmethod
    def from_arrays(arrays: Mapping[str, Any], stats: dict | None = None, device: str | torch.device = "cpu") -> "FitResult":
        def t(k: str) -> Tensor:
            return torch.as_tensor(np.asarray(arrays[k]), dtype=torch.float32, device=device)

        off = {k: t(f"off_{k}") for k in _PARAM_KEYS} if all(f"off_{k}" in arrays for k in _PARAM_KEYS) else None
        pres = torch.as_tensor(np.asarray(arrays["present"]).astype(bool), device=device) if "present" in arrays else None
        return FitResult(**{k: t(k) for k in _PARAM_KEYS}, stats=dict(stats or {}), collision_off=off, present=pres)

    def presence(self) -> Tensor:
        """``[F, P]`` bool (all True when :attr:`present` is None)."""
        if self.present is not None:
            return self.present.to(torch.bool)
        return torch.ones(self.global_orient.shape[:2], dtype=torch.bool, device=self.global_orient.device)


@contextmanager
def cpu_threads(n: int):
    """torch's intra-op threads set to ``n`` (> 0) for the block, restored afterwards."""
    old = torch.get_num_threads()
    if n > 0 and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def model_outputs(body: BodyModel | FastBody, result: FitResult, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """Meshes and joints of a fit: ``vertices [F, P, N, 3]`` and ``joints45 [F, P, 45, 3]``
    (no grad, on the result's device, ``chunk`` person-frames at a time; zeros for the person-frames
    the fit has no body in, :attr:`FitResult.present`)."""
    dev = result.global_orient.device
    fast = body if isinstance(body, FastBody) else FastBody(body)
    if fast.device != dev:  # a copy on the result's device (the caller's model is not moved)
        fast = FastBody(fast.body, fast.vertex_joint_names).to(device=dev, dtype=fast.dtype)
    F, P = result.global_orient.shape[:2]
    N = F * P
    go = result.global_orient.reshape(N, 3).to(fast.dtype)
    bp = result.body_pose.reshape(N, NUM_BODY_POSE).to(fast.dtype)
    be = result.betas.to(fast.dtype)[None].expand(F, P, -1).reshape(N, -1)
    tr = result.transl.reshape(N, 3).to(fast.dtype)
    vs, js = [], []
    # every person-frame, absent ones too (then zeroed): the batches, hence the float results, do not
    # depend on who is present (a subset's batched products can differ in the last bit with the
    # thread count, and a resumed run must write the same bytes)
    with torch.no_grad():
        for i in range(0, N, chunk):
            v, j = fast.vertices(go[i : i + chunk], bp[i : i + chunk], be[i : i + chunk], tr[i : i + chunk])
            vs.append(v)
            js.append(j)
    V = torch.cat(vs) if vs else go.new_zeros(0, fast.v_template.shape[0], 3)
    Jt = torch.cat(js) if js else go.new_zeros(0, 45, 3)
    if result.present is not None:
        gone = ~result.present.to(dev).reshape(N, 1, 1)
        V, Jt = V.masked_fill(gone, 0.0), Jt.masked_fill(gone, 0.0)
    return V.view(F, P, -1, 3), Jt.view(F, P, -1, 3)
