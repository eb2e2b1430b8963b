"""Ground-truth interpenetration and contact of the synthetic generator over seeds (issue 15).

    python -m bench.synth_contact --frames 60 --seeds 0-19 [--set recontact=true ...] [--json OUT]

Per seed: ``make_capture`` (2 cameras: cameras do not change the motion) with the
:class:`~h4d_fast.synth.collide.ResolveParams` overrides of ``--set`` (``name=value``), the
ground-truth meshes posed with the default body model, and per frame

* the interpenetration volume (:func:`h4d_fast.ops.penetration.penetration_volume`, cm^3);
* vertex contact at ``--contact-mm`` (:func:`h4d_fast.ops.contact.export_contact`, the labels the
  export and ``ground_truth/contact.npz`` hold): frames where some vertex of one person is within
  10 mm of the other's surface (or inside), and the number of labels;
* the frames the script means the people to touch (a hand's IK weight toward the partner above
  one half: hug, hands on shoulders / neck / waist), and how many of them touch.

Printed per seed, then the summary over seeds (seeds with mean <= 0.1 cm^3 per frame, mean cm^3,
worst frame, contact frames) and the generator's seconds (figures, not timings, on a shared machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import seed_list  # noqa: E402


def resolve_params(sets: list[str]):
    """:class:`ResolveParams` with ``name=value`` overrides (value parsed as JSON, else a string)."""
    from h4d_fast.synth.collide import ResolveParams

    kw: dict[str, Any] = {}
    for s in sets:
        k, _, v = s.partition("=")
        try:
            kw[k] = json.loads(v)
        except json.JSONDecodeError:
            kw[k] = v
    return ResolveParams(**kw)


def one_seed(seed: int, frames: int, prm, body, contact_mm: float) -> dict[str, Any]:
    from h4d_fast.body.fast import recompute_meshes
    from h4d_fast.ops.contact import export_contact
    from h4d_fast.ops.penetration import penetration_volume
    from h4d_fast.synth import make_capture

    t0 = time.perf_counter()
    _, gt, meta = make_capture(num_frames=frames, num_cameras=2, seed=seed, **({} if prm is None else {"resolve": prm}))
    gen_s = time.perf_counter() - t0
    p = {k: np.asarray(gt.smpl[k]) for k in ("global_orient", "body_pose", "betas", "transl")}
    v, _ = recompute_meshes(body, p)
    v = torch.as_tensor(v)
    vol = torch.cat([penetration_volume(v[s : s + 32, 0], v[s : s + 32, 1], body.faces) for s in range(0, len(v), 32)]).double().numpy()
    lab = export_contact(v, body.faces, None, contact_mm)["contact"]  # [F, 1, 2, N]
    touch = lab.reshape(len(v), -1).any(-1)
    hw = meta["motion"].get("hand_weight")
    intended = np.asarray(hw).reshape(len(v), -1).max(-1) > 0.5 if hw is not None else None
    col = meta["motion"].get("collision", {})
    rec = {"seed": seed, "volume_mean_cm3": float(vol.mean()), "volume_max_cm3": float(vol.max()),
           "frames_over_0.1cm3": int((vol > 0.1).sum()), "frames_over_1cm3": int((vol > 1.0).sum()),
           "contact_frames": int(touch.sum()), "contact_labels": int(lab.sum()), "generator_s": gen_s,
           "volume_cm3": [round(float(x), 4) for x in vol], "touch": touch.astype(int).tolist()}
    if intended is not None:
        rec["intended_frames"] = int(intended.sum())
        rec["intended_touching"] = int((intended & touch).sum())
    for k in ("recontact_s", "recontact_moved"):
        if k in col:
            rec[k] = col[k]
    return rec


def summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    m = np.array([r["volume_mean_cm3"] for r in recs])
    c = np.array([r["contact_frames"] for r in recs])
    worst = max(recs, key=lambda r: r["volume_max_cm3"])
    out = {"seeds": len(recs), "seeds_mean_le_0.1cm3": int((m <= 0.1).sum()), "mean_cm3": float(m.mean()), "median_seed_cm3": float(np.median(m)),
           "worst_frame_cm3": float(worst["volume_max_cm3"]), "worst_seed": worst["seed"],
           "frames_over_1cm3": int(sum(r["frames_over_1cm3"] for r in recs)), "frames_over_0.1cm3": int(sum(r["frames_over_0.1cm3"] for r in recs)),
           "contact_frames_mean": float(c.mean()), "contact_frames_median": float(np.median(c)), "contact_frames_min": int(c.min()),
           "contact_labels_mean": float(np.mean([r["contact_labels"] for r in recs])),
           "generator_s_mean": float(np.mean([r["generator_s"] for r in recs])),
           "failing": {r["seed"]: round(r["volume_mean_cm3"], 3) for r in recs if r["volume_mean_cm3"] > 0.1}}
    if all("intended_frames" in r for r in recs):
        out["intended_frames_mean"] = float(np.mean([r["intended_frames"] for r in recs]))
        out["intended_touching_mean"] = float(np.mean([r["intended_touching"] for r in recs]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--set", action="append", default=[], help="ResolveParams override name=value (repeatable)")
    ap.add_argument("--contact-mm", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from h4d_fast.body import load_body_model

    torch.set_num_threads(1)
    body = load_body_model(device=torch.device("cpu"))
    prm = resolve_params(a.set) if a.set else None  # None: the generator's defaults (also for a tree without SynthConfig.resolve)
    recs = []
    head = {"frames": a.frames, "cameras": 2, "contact_mm": a.contact_mm, "set": a.set}
    if prm is not None:
        head["resolve"] = dataclasses.asdict(prm)
    for s in seed_list(a.seeds):
        r = one_seed(s, a.frames, prm, body, a.contact_mm)
        recs.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("volume_cm3", "touch")}), flush=True)
        if a.json:
            a.json.write_text(json.dumps({**head, "seeds": recs}, indent=1))
    res = {**head, "summary": summary(recs), "seeds": recs}
    print(json.dumps(res["summary"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
