"""Ground-truth vertex contact of a synthetic capture: ``SEQ/ground_truth/contact.npz``.

The labels are those an export computes (:func:`ground_truth_contact`: a
vertex touches the other person within ``contact_mm`` of their surface or inside their body), on
the ground-truth body parameters posed with the generator's own body model; a pair with a person
absent from a frame (ground-truth keypoints invalid there: ``--enter-leave``) has no contact in it.
``h4d eval`` reads the file for ``contact_f1`` (:func:`h4d_fast.eval.interaction.interaction_report`)
when its threshold and frames match the run's.

    capture, gt, meta = make_capture(...)
    write_sequence(seq, capture, gt=gt, ...)
    write_ground_truth_contact(seq, capture, gt, meta)     # -> SEQ/ground_truth/contact.npz
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ops.contact import DEFAULT_CONTACT_MM, export_contact


def ground_truth_presence(gt: Any) -> np.ndarray:
    """``[F, P]`` bool: the person's ground-truth keypoints are valid in the frame."""
    return (torch.as_tensor(gt.poses3d)[..., 3] > 0.5).any(-1).cpu().numpy()


def ground_truth_contact(params: Any, body: Any, contact_mm: float = DEFAULT_CONTACT_MM, device: str = "cpu",
                         present: Any = None) -> dict[str, Any]:
    """:func:`export_contact` of ground-truth body parameters (``global_orient [F, P, 3]``,
    ``body_pose [F, P, 69]``, ``betas [P, K]`` or ``[F, P, K]``, ``transl [F, P, 3]``) posed with
    ``body`` (a :class:`~h4d_fast.body.model.BodyModel`): the synthetic generator's contact labels
    (``present [F, P]``: as :func:`export_contact`)."""
    from ..body.fast import recompute_meshes
    from ..body.parts import body_parts

    p = {k: np.asarray(torch.as_tensor(params[k]).cpu()) for k in ("global_orient", "body_pose", "betas", "transl")}
    v, _ = recompute_meshes(body, p, device=device)
    return export_contact(torch.as_tensor(v, device=device), body.faces.to(device), body_parts(body), contact_mm, present=present)


def write_ground_truth_contact(seq: str | Path, capture: Any, gt: Any, meta: dict[str, Any],
                               contact_mm: float = DEFAULT_CONTACT_MM, device: str = "cpu") -> Path | None:
    """Write ``seq/ground_truth/contact.npz`` (:func:`h4d_fast.io.contact.write_contact`) for a capture of
    :func:`h4d_fast.synth.make_capture`; None (nothing written) when it has fewer than two people or
    no body-model ground truth (skeleton-only generation)."""
    from ..body.parts import body_parts
    from ..io.contact import CONTACT_FILE, write_contact
    from . import _resolve_body

    sm = gt.smpl or {}
    cfg = meta.get("config")
    if meta.get("body_model") is None or "betas" not in sm or cfg is None or len(capture.person_names) < 2:
        return None
    body = _resolve_body(cfg.body)
    exp = ground_truth_contact(sm, body, contact_mm, device=device, present=ground_truth_presence(gt))
    parts = body_parts(body)
    path = Path(seq) / "ground_truth" / CONTACT_FILE
    return write_contact(path, torch.from_numpy(exp["contact"]), [tuple(p) for p in exp["contact_pairs"].tolist()],
                         [int(f) for f in capture.frame_ids], contact_mm, parts.names, parts.vertex_part)


__all__ = ["ground_truth_contact", "ground_truth_presence", "write_ground_truth_contact"]
