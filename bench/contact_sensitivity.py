"""How much vertex-level contact F1 survives small, controlled errors of the ground truth itself.

    python -m bench.contact_sensitivity --frames 60 --seeds 0-4 [--json OUT]

Per seed: the synthetic ground truth's bodies (posed with the default body model), their contact
labels at ``contact.contact_mm`` (:func:`h4d_fast.ops.contact.export_contact`), and the F1 of the
labels of the same bodies after one error each:

* ``shift_<d>mm``: person 1 moved ``d`` mm, rigidly, in a fixed random horizontal direction per
  frame (the size of a good keypoint fit's error);
* ``no_wrists`` / ``no_ankles`` / ``no_wrists_ankles``: the wrist / ankle rotations set to zero,
  as a fit from COCO-17 keypoints leaves them (nothing observes them);
* ``no_twist``: the elbows' rotation about the forearm removed (the swing kept), the ambiguity a
  keypoint fit resolves arbitrarily.

A fit cannot do better than the ground truth with such an error, so these figures bound what
``contact_f1`` of ``h4d eval`` can reach at a given accuracy. Printed per seed, then the mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import seed_list  # noqa: E402

WRISTS, ANKLES, ELBOWS = (19, 20), (6, 7), (17, 18)  # body_pose joint slots (SMPL joint - 1)


def _zero(params: dict[str, np.ndarray], slots: tuple[int, ...]) -> dict[str, np.ndarray]:
    bp = params["body_pose"].reshape(*params["body_pose"].shape[:2], 23, 3).copy()
    bp[:, :, list(slots)] = 0.0
    return {**params, "body_pose": bp.reshape(params["body_pose"].shape)}


def _no_twist(params: dict[str, np.ndarray], rest: np.ndarray) -> dict[str, np.ndarray]:
    """Elbow rotations without their component about the rest forearm (swing-twist split)."""
    from h4d_fast.rotations import axis_angle_to_matrix

    bp = torch.as_tensor(params["body_pose"]).reshape(*params["body_pose"].shape[:2], 23, 3).clone().double()
    for slot, (el, wr) in zip(ELBOWS, ((18, 20), (19, 21))):
        axis = torch.as_tensor(rest[:, wr] - rest[:, el]).double()  # [P, 3] forearm in the elbow's frame at rest
        axis = axis / axis.norm(dim=-1, keepdim=True)
        Rm = axis_angle_to_matrix(bp[:, :, slot])  # [F, P, 3, 3]
        t = (Rm @ axis[None, :, :, None])[..., 0]  # where the forearm points
        c = torch.linalg.cross(axis[None].expand_as(t), t, dim=-1)
        ang = torch.atan2(c.norm(dim=-1), (axis[None] * t).sum(-1))
        bp[:, :, slot] = torch.where(c.norm(dim=-1, keepdim=True) > 1e-9, c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12) * ang[..., None],
                                     torch.zeros_like(c))
    return {**params, "body_pose": bp.reshape(params["body_pose"].shape).numpy()}


def one_seed(seed: int, frames: int, body, contact_mm: float) -> dict[str, Any]:
    from h4d_fast.body.fast import FastBody, recompute_meshes
    from h4d_fast.eval.metrics import contact_scores
    from h4d_fast.ops.contact import export_contact
    from h4d_fast.synth import make_capture

    _, gt, _ = make_capture(num_frames=frames, num_cameras=2, seed=seed)
    p = {k: np.asarray(gt.smpl[k], dtype=np.float64) for k in ("global_orient", "body_pose", "betas", "transl")}
    faces = body.faces

    def labels(q: dict[str, np.ndarray]) -> torch.Tensor:
        v, _ = recompute_meshes(body, q)
        return torch.from_numpy(export_contact(torch.as_tensor(v), faces, contact_mm=contact_mm)["contact"])

    ref = labels(p)
    rec: dict[str, Any] = {"seed": seed, "gt_positives": int(ref.sum())}
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, frames)
    direction = np.stack([np.cos(ang), np.sin(ang), np.zeros(frames)], -1)
    for d in (2.0, 4.0, 8.0):
        q = {**p, "transl": p["transl"].copy()}
        q["transl"][:, 1] += direction * d / 1000.0
        rec[f"shift_{d:g}mm"] = contact_scores(labels(q), ref)["f1"]
    fb = FastBody(body)
    rest = fb.rest_joints(torch.as_tensor(p["betas"], dtype=fb.dtype)).double().numpy()  # [P, 24, 3]
    for name, q in (("no_wrists", _zero(p, WRISTS)), ("no_ankles", _zero(p, ANKLES)), ("no_wrists_ankles", _zero(p, WRISTS + ANKLES)),
                    ("no_twist", _no_twist(p, rest))):
        rec[name] = contact_scores(labels(q), ref)["f1"]
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--contact-mm", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from h4d_fast.body import load_body_model

    body = load_body_model()
    recs = []
    for s in seed_list(a.seeds):
        recs.append(one_seed(s, a.frames, body, a.contact_mm))
        print(json.dumps(recs[-1]), flush=True)
    keys = [k for k in recs[0] if k not in ("seed", "gt_positives")]
    res = {"frames": a.frames, "contact_mm": a.contact_mm, "seeds": recs,
           "mean_f1": {k: float(np.mean([r[k] for r in recs])) for k in keys}}
    print(json.dumps(res["mean_f1"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
