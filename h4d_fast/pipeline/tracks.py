"""From tracks to people: which tracks are ghosts, who comes back, and the presence of each person.

The tracker (:mod:`h4d_fast.pipeline.triangulate`) leaves one *track* per birth: a track slot from
its birth frame to the last frame it was seen (``identity.track_min_keypoints`` keypoints
triangulated) before it ended. Here, on whole tracks:

1. **ghosts** -- a track of no declared person seen in fewer than ``identity.min_track_frames``
   frames is dropped (a birth must agree across views over a few frames to count);
2. **names** -- a track born from a person's identity box or prompted detections is that person.
   Every other track, in order of birth, is compared with each known person who is absent over
   the whole track (a person is never in two places at once) by *body proportions*: the relative
   RMS difference of the median lengths of the rigid limbs (:data:`~h4d_fast.pipeline.refine.RIGID_LIMBS`).
   The closest one below ``identity.reid_max_difference`` takes the track (a returning person);
   otherwise the track is a new person, named from the declared names not yet used (without
   identity boxes), then continuing their pattern (``aria03``, ...). With ``--people N`` a track
   that would make an ``N+1``-th person goes to the closest absent person instead, or is dropped
   when everyone is present;
3. **presence** -- a person is present from the first to the last frame of each of their tracks:
   ``present [F, P]``; nothing is written for the other frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..config import IdentityConfig
from ..errors import InputError
from .refine import RIGID_LIMBS, _limb_index, limb_lengths


@dataclass
class TrackResult:
    """Output of stages 2+3.

    Attributes:
        poses: ``[F, P, J, 4]`` x, y, z (metres), valid; zeros where the person is absent.
        assign: ``[F, V, P]`` detection slot used for each person in each view (-1 = none).
        n_inliers: ``[F, P, J]`` inlier views per keypoint.
        present: ``[F, P]`` bool, the person is in the frame (between the first and the last frame
            of one of their tracks).
        person_names: ``P`` names (declared names first, then people found in the data).
        stats: births, ends, re-identifications, ghosts dropped, frames per path.
    """

    poses: Tensor
    assign: Tensor
    n_inliers: Tensor
    present: Optional[Tensor] = None
    person_names: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def declared_names(person_names: Optional[Sequence[str]], num_people: int) -> list[str]:
    """The declared people's names: ``person_names`` (when given) or ``person01 ..``."""
    if person_names is not None:
        names = [str(n) for n in person_names]
        if len(names) != num_people:
            raise ValueError(f"{len(names)} person names for {num_people} declared people")
        return names
    return [f"person{i + 1:02d}" for i in range(num_people)]


def more_names(existing: Sequence[str], n: int) -> list[str]:
    """``n`` new names continuing the pattern of ``existing`` (``aria02`` -> ``aria03``; else ``personNN``)."""
    taken = set(existing)
    prefix, width = "person", 2
    for name in reversed(list(existing)):
        m = re.fullmatch(r"(.*?)(\d+)", name)
        if m:
            prefix, width = m.group(1), len(m.group(2))
            break
    out: list[str] = []
    k = 1
    while len(out) < n:
        cand = f"{prefix}{k:0{width}d}"
        if cand not in taken:
            out.append(cand)
            taken.add(cand)
        k += 1
    return out


def parse_people(value: str | int | None, source: str = "identity.people") -> Optional[int]:
    """``identity.people`` -> ``None`` (auto) or the hard cap ``N >= 1`` (InputError otherwise)."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("", "auto"):
        return None
    try:
        n = int(v)
    except ValueError:
        raise InputError(None, f"expected 'auto' or a number of people, got {value!r}", field=source) from None
    if n < 1:
        raise InputError(None, f"the number of people must be at least 1, got {n}", field=source)
    return n


@dataclass
class Track:
    """One track: slot ``slot`` from frame ``start`` to ``end`` (inclusive, both seen)."""

    slot: int
    start: int
    end: int
    person: int  # declared person (-1 = anonymous)
    seen_frames: int
    limbs: Tensor  # [L] median rigid-limb lengths (NaN where never measured)


def tracks_of(poses: Tensor, seen: Tensor, births: Sequence[tuple[int, int, int]]) -> list[Track]:
    """Tracks from the tracker's per-slot output.

    Args:
        poses: ``[F, S, J, 4]`` per slot; seen ``[F, S]``.
        births: ``(frame, slot, declared person or -1)`` in frame order.
    """
    F = poses.shape[0]
    out: list[Track] = []
    by_slot: dict[int, list[tuple[int, int]]] = {}
    for f, s, p in births:
        by_slot.setdefault(s, []).append((f, p))
    rig = torch.tensor(RIGID_LIMBS, dtype=torch.long, device=poses.device)
    for s, lst in by_slot.items():
        lst.sort()
        for i, (f0, p) in enumerate(lst):
            f1 = lst[i + 1][0] if i + 1 < len(lst) else F
            sf = seen[f0:f1, s].nonzero()[:, 0]
            if sf.numel() == 0:
                continue
            end = f0 + int(sf[-1])
            X = poses[f0:end + 1, s]  # [n, J, 4]
            L = limb_lengths(X[..., :3])[:, rig]  # [n, Lr]
            ok = X[..., 3] > 0.5
            a, b = _limb_index(poses.device)
            okl = (ok[:, a] & ok[:, b])[:, rig] & seen[f0:end + 1, s][:, None]
            med = torch.where(okl, L, torch.full_like(L, float("nan"))).nanmedian(0).values
            out.append(Track(s, f0, end, p, int(sf.numel()), med.double().cpu()))
    out.sort(key=lambda t: (t.start, t.slot))
    return out


def proportion_distance(a: Tensor, b: Tensor, min_limbs: int = 4) -> float:
    """Relative RMS difference of two limb-length signatures (``inf`` with fewer than ``min_limbs`` in common)."""
    ok = torch.isfinite(a) & torch.isfinite(b) & (a > 0) & (b > 0)
    if int(ok.sum()) < min_limbs:
        return float("inf")
    r = (a[ok] - b[ok]) / (0.5 * (a[ok] + b[ok]))
    return float(torch.sqrt((r * r).mean()))


def people_from_tracks(out: dict, names: list[str], cfg: IdentityConfig, max_people: Optional[int] = None,
                       boxed: Optional[Sequence[bool]] = None):
    """Tracks -> people (module docstring): a :class:`TrackResult`.

    Args:
        out: the tracker's output (``poses [F, S, J, 4]``, ``seen``, ``assign [F, V, S]``,
            ``n_inliers``, ``births``, ``stats``).
        names: the declared names (people ``0..M-1`` of ``births``).
        boxed: per declared person, whether an identity box names them (those are output columns
            even when never seen; the other declared names are taken by new people in order).
            Default: none.
    """
    poses, seen, A, N = out["poses"], out["seen"], out["assign"], out["n_inliers"]
    F, S, J, _ = poses.shape
    V = A.shape[1]
    tracks = tracks_of(poses, seen, out["births"])
    min_frames = max(1, int(cfg.min_track_frames))
    ghosts = [t for t in tracks if t.person < 0 and t.seen_frames < min_frames]
    tracks = [t for t in tracks if not (t.person < 0 and t.seen_frames < min_frames)]
    bound = [False] * len(names) if boxed is None else [bool(b) for b in boxed]
    # people: name, tracks, declared index
    people: list[dict] = [{"name": n, "tracks": [], "declared": i} for i, n in enumerate(names) if bound[i]]
    pool = [n for i, n in enumerate(names) if not bound[i]]  # declared names new people take first
    reid, dropped, forced = 0, 0, 0

    def absent(p: dict, t: Track) -> bool:
        return all(u.end < t.start or u.start > t.end for u in p["tracks"])

    def signature(p: dict) -> Tensor:
        L = torch.stack([u.limbs for u in p["tracks"]])
        w = torch.tensor([float(u.seen_frames) for u in p["tracks"]], dtype=L.dtype)
        ok = torch.isfinite(L)
        return torch.where(ok.any(0), (torch.nan_to_num(L) * w[:, None] * ok).sum(0) / (w[:, None] * ok).sum(0).clamp_min(1e-9),
                           torch.full_like(L[0], float("nan")))

    for t in tracks:
        if t.person >= 0:
            p = next((q for q in people if q.get("declared") == t.person), None)
            if p is None:
                p = {"name": names[t.person], "tracks": [], "declared": t.person}
                if names[t.person] in pool:
                    pool.remove(names[t.person])
                people.append(p)
            if absent(p, t):
                p["tracks"].append(t)
                continue
        cands = [(proportion_distance(t.limbs, signature(p)), i) for i, p in enumerate(people) if p["tracks"] and absent(p, t)]
        cands.sort()
        if cands and cands[0][0] < cfg.reid_max_difference:
            people[cands[0][1]]["tracks"].append(t)
            reid += 1
            continue
        if max_people is not None and len(people) >= max_people:
            free = [i for i, p in enumerate(people) if absent(p, t)]
            if not free:
                dropped += 1
                continue
            best = min(free, key=lambda i: proportion_distance(t.limbs, signature(people[i])) if people[i]["tracks"] else float("inf"))
            people[best]["tracks"].append(t)
            forced += 1
            continue
        name = pool.pop(0) if pool else more_names([p["name"] for p in people] + names, 1)[0]
        people.append({"name": name, "tracks": [t]})

    P = len(people)
    dev = poses.device
    out_poses = poses.new_zeros(F, P, J, 4)
    present = torch.zeros(F, P, dtype=torch.bool, device=dev)
    assign = torch.full((F, V, P), -1, dtype=torch.long, device=dev)
    ninl = torch.zeros(F, P, J, dtype=N.dtype, device=dev)
    for i, p in enumerate(people):
        for t in p["tracks"]:
            sl = slice(t.start, t.end + 1)
            out_poses[sl, i] = poses[sl, t.slot]
            present[sl, i] = True
            assign[sl, :, i] = A[sl, :, t.slot]
            ninl[sl, i] = N[sl, t.slot]
    stats = dict(out.get("stats", {}))
    stats.update({
        "tracks": len(tracks), "ghost_tracks_dropped": len(ghosts), "reidentified": reid, "people": P,
        "tracks_over_cap_dropped": dropped, "tracks_over_cap_merged": forced,
        "births": len(out["births"]),
    })
    return TrackResult(out_poses, assign, ninl, present, [p["name"] for p in people], stats)
