"""Interpenetration over synthetic seeds (issue 15, item 4): the ground truth's, and optionally the fit's.

    python -m bench.penetration_seeds --frames 60 --seeds 0-19 [--run [--compare]] [--json OUT]

Per seed: the synthetic ground truth posed with the default body model, per frame the
interpenetration volume (:func:`h4d_fast.ops.penetration.penetration_volume`, cm^3) and the maximum
penetration depth as the Harmony4D benchmark measures it (:func:`h4d_fast.eval.interaction.penetration_measures`,
mm). With ``--run``: ``h4d run`` on the capture (synthetic detections; every stage, the collision
stage included) and the same figures of the fit, plus the fit's SMPL-joint MPJPE and contact F1
from ``h4d eval``. Printed per seed, then the distribution over seeds (mean, median, max, share
of frames over 0.1 cm^3 / 10 mm). With ``--run`` the seconds of the fit, of the export's contact
labels and of ``h4d eval``'s interaction measures are recorded beside (figures, not assertions).

Measured at ec635d9 on the shared CPU machine (no GPU was free), 60 frames:

* ground truth, seeds 0-19 (2 cameras; cameras do not change the motion): interpenetration per
  frame, mean over a seed 5.4 cm^3 on average over seeds (0.64 .. 13.0), worst frame 327 cm^3;
  13.7 % of frames over 0.1 cm^3 and 7.9 % deeper than 10 mm (max 39.7 mm). The penetrating
  vertices are hands, forearms and the head (seeds 4, 8, 13), in the grapple and approach phases:
  the generator's collision pass (synth/collide.py) resolves its proxy bodies, not these parts.
* ``h4d run`` (20 cameras) on seeds 0-9 and 11: after the collision stage 5.5 cm^3 per frame on
  average (2.5 .. 8.8), the ground truth's own level (5.5); 9.4 % of frames deeper than 10 mm;
  SMPL-joint MPJPE 8.8 mm, PVE 15.9 mm; contact F1 against the ground truth at 10 mm 0.30
  (0.13 .. 0.50); the export's contact labels cost 0.39 of the fit's time on the CPU (0.20 .. 0.55).

Measured at b4daff5 (the generator's exact mesh pass, synth/settle.py), same machine, 60 frames,
2 cameras: ground truth, seeds 0-19: 19 of 20 seeds at most 0.1 cm^3 per frame on average (18 with
every frame under it; seed 3 0.18, worst frame 10.3 cm^3, 12.1 mm deep; seed 5 0.053, worst frame
3.2 cm^3); 0.25 % of all frames over 0.1 cm^3. bench/results/2026-12-07-cpu-synth-gt/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import seed_list  # noqa: E402


def mesh_figures(verts: torch.Tensor, faces: torch.Tensor, chunk: int = 64) -> dict[str, np.ndarray]:
    """Per frame ``volume_cm3`` and ``max_depth_mm`` of ``verts [F, 2, N, 3]``."""
    from h4d_fast.eval.interaction import pair_contacts
    from h4d_fast.ops.penetration import penetration_volume

    vol, depth = [], []
    for s in range(0, verts.shape[0], chunk):
        v = verts[s : s + chunk]
        vol.append(penetration_volume(v[:, 0], v[:, 1], faces).double().cpu())
        pcs = pair_contacts(v, faces)
        depth.append(torch.stack([pc.max_vertex_depth() for pc in pcs]).amax(0).double().cpu() * 1000.0)
    return {"volume_cm3": torch.cat(vol).numpy(), "max_depth_mm": torch.cat(depth).numpy()}


def summary(fig: dict[str, np.ndarray]) -> dict[str, float]:
    v, d = fig["volume_cm3"], fig["max_depth_mm"]
    return {"volume_mean_cm3": float(v.mean()), "volume_max_cm3": float(v.max()), "frames_over_0.1cm3": float((v > 0.1).mean()),
            "depth_mean_mm": float(d.mean()), "depth_max_mm": float(d.max()), "frames_over_10mm": float((d > 10).mean()),
            "depth_p95_mm": float(np.percentile(d, 95))}


def one_seed(seed: int, frames: int, cameras: int, run: bool, device: torch.device, body, work: Path, compare: bool = False,
             sets: list[str] | None = None) -> dict[str, Any]:
    from h4d_fast.body.fast import recompute_meshes
    from h4d_fast.synth import make_capture

    t0 = time.perf_counter()
    cap, gt, meta = make_capture(num_frames=frames, num_cameras=cameras, seed=seed)
    p = {k: np.asarray(gt.smpl[k]) for k in ("global_orient", "body_pose", "betas", "transl")}
    v, _ = recompute_meshes(body, p, device=str(device))
    faces = body.faces.to(device)
    rec: dict[str, Any] = {"seed": seed, "contact_frames": int(np.asarray(meta["contact"]).sum()),
                           "gt": summary(mesh_figures(torch.as_tensor(v, device=device), faces))}
    if run:
        from h4d_fast.cli import main
        from h4d_fast.config import load_config
        from h4d_fast.eval.report import evaluate_output
        from h4d_fast.io.harmony4d import write_sequence
        from h4d_fast.io.smpl_layout import read_smpl_sequence
        from h4d_fast.synth.contact import write_ground_truth_contact

        seq, out = work / f"seq{seed}", work / f"out{seed}"
        write_sequence(seq, cap, gt=gt, scale_transform=meta.get("scale_transform"), meta={"name": f"s{seed}", "fps": 30.0, "body_model": "default"})
        write_ground_truth_contact(seq, cap, gt, meta, load_config(None).contact.contact_mm, device=str(device))
        assert main(["run", str(seq), "--out", str(out), "--quiet", "--force", *(["--set", "fit.compare_collision=true"] if compare else []),
                     *[x for kv in (sets or []) for x in ("--set", kv)]]) == 0
        fit = read_smpl_sequence(out / "processed_data")
        fv = torch.as_tensor(np.asarray(fit["vertices"]), device=device)
        rep = evaluate_output(out, seq)
        st = json.loads((out / "fit_stats.json").read_text())
        rec["fit"] = summary(mesh_figures(fv, faces))
        rec["fit"].update({k: rep.get(k) for k in ("mpjpe_smpl_mm", "pve_mm", "contact_f1", "contact_precision", "contact_recall")})
        mesh = rep.get("mesh") or {}
        if mesh.get("mpjpe_smpl_without_collision_mm") is not None:
            rec["fit"]["mpjpe_smpl_without_collision_mm"] = mesh["mpjpe_smpl_without_collision_mm"]
            rec["fit"]["mpjpe_collision_cost_mm"] = rep["mpjpe_smpl_mm"] - mesh["mpjpe_smpl_without_collision_mm"]
        rec["fit"].update({k: st.get(k) for k in ("penetration_before_cm3", "penetration_without_collision_cm3", "penetration_after_cm3",
                                                    "contact_frames")})
        stages = {s["name"]: s for s in json.loads((out / "timing.json").read_text())["stages"]}
        rec["fit"]["fit_s"] = stages.get("fit", {}).get("seconds")
        rec["fit"]["export_contact_s"] = (stages.get("export_smpl", {}).get("stats") or {}).get("contact_seconds")
        rec["fit"]["eval_interaction_s"] = rep.get("interaction_seconds")
        rec["gt_mpjpe_check"] = rep.get("mpjpe_mm")
    rec["seconds"] = time.perf_counter() - t0
    return rec


def distribution(recs: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k in recs[0][key]:
        vals = np.asarray([r[key][k] for r in recs if r[key].get(k) is not None], dtype=float)
        if vals.size:
            out[k] = {"mean": float(vals.mean()), "median": float(np.median(vals)), "max": float(vals.max()), "min": float(vals.min())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--run", action="store_true", help="also run the pipeline and measure the fit")
    ap.add_argument("--compare", action="store_true", help="with --run: also fit without the collision term (fit.compare_collision) "
                                                         "and record the collision stage's cost in SMPL-joint MPJPE")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --run: a setting of h4d run (repeatable)")
    ap.add_argument("--keep", type=Path, help="keep the captures and outputs in this folder (else a temporary one)")
    a = ap.parse_args(argv)
    from h4d_fast.body import load_body_model

    dev = torch.device(a.device)
    body = load_body_model(device=dev)
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        if a.keep:
            a.keep.mkdir(parents=True, exist_ok=True)
        for s in seed_list(a.seeds):
            r = one_seed(s, a.frames, a.cameras, a.run, dev, body, a.keep or Path(tmp), a.compare, a.set)
            recs.append(r)
            print(json.dumps(r), flush=True)
            if a.json:
                a.json.write_text(json.dumps({"frames": a.frames, "seeds": recs}, indent=1))
    res = {"frames": a.frames, "cameras": a.cameras, "set": a.set, "seeds": recs, "gt": distribution(recs, "gt")}
    if a.run:
        res["fit"] = distribution(recs, "fit")
    print(json.dumps({k: v for k, v in res.items() if k != "seeds"}, indent=1))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
