"""Stages 2+3: per-frame identity and RANSAC view-set triangulation over a sequence, with tracks
that are born, end and come back.

A *track* (one slot of the tracker) follows one person from its birth to its end:

* **prediction** -- the motion model (:func:`~h4d_fast.pipeline.identity.predict_next`) over the
  last ``identity.window`` frames, projected into every view;
* **assignment** -- per view, the exact maximum-OKS one-to-one matching of tracks to detections
  (:func:`~h4d_fast.ops.assign.linear_assignment`); a prompted detection (``Detections.identity``)
  goes to its person's track instead; keypoints far from the prediction are gated out;
* **triangulation** -- RANSAC over the assigned views (:func:`~h4d_fast.ops.triangulate_ransac`); a
  track is *seen* in a frame when ``identity.track_min_keypoints`` keypoints triangulate;
* **end** -- a track not seen for ``identity.window`` frames has no prediction left: it ends and
  its slot is free for a newborn (a gap of any length with no detections ends every track);
* **birth** -- detections no track claims, in at least ``identity.birth_min_views`` views, are
  associated across views by epipolar agreement (:func:`~h4d_fast.pipeline.identity.bootstrap_people`)
  and triangulated; a candidate becomes a track when enough keypoints triangulate and it is not a
  tracked person's left-over detections (a detection that matches the projection of a person
  triangulated in the frame, ``identity.explained_oks``, is no birth material; a candidate within
  ``identity.ghost_distance`` of a tracked person is dropped). At the first frames the
  identity boxes name the people they cover; prompted detections of a person without a track
  name the anonymous track that took them, or else start that person's track.

Whether a newborn is a new person or a returning one, and which tracks are ghosts, is decided on
whole tracks afterwards (:mod:`h4d_fast.pipeline.tracks`).

Speed: frame ``t`` needs the poses of frame ``t-1``, so the reference runs frame by frame
(``identity.batch_frames = 1``). On CUDA the default runs up to ``identity.batch_frames`` frames as one batch:
it assigns them all from a guess of their predecessors' poses (the last pose held), triangulates
them all, recomputes every assignment from the poses just triangulated, and accepts the frames up
to the first whose assignment (or gate) changed -- those are exactly what the frame loop computes,
since each one's inputs came from accepted frames -- then repeats from there with the recomputed
assignments (each round accepts at least one more frame). Frames where a track may be born run
through the frame-by-frame step. All work inside a batch is batched over frames, views, tracks and
keypoints, so the number of kernel launches per frame drops by the batch's length. On the CPU the
frames between possible births run as one compiled loop instead (:mod:`h4d_fast.pipeline._track_numba`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..camera import CameraSet
from ..config import IdentityConfig, TriangulationConfig
from ..data import Detections
from ..ops import oks, triangulate_ransac
from ._threads import single_thread
from .identity import assign_by_boxes, assign_by_prediction, bootstrap_people, gather_assigned, predict_next
from .tracks import TrackResult  # noqa: F401  (re-exported: stages 2+3 return it)


def normalize_detections(det: Detections, cams: CameraSet) -> Tensor:
    """Undistorted normalized coordinates of every detected keypoint.

    ``kpts [F, V, D, J, 3] -> [F, V, D, J, 2]`` (NaN where the keypoint is undetected or cannot
    be undistorted).
    """
    uv = det.kpts[..., :2].to(cams.dtype).permute(0, 2, 3, 1, 4)  # [F, D, J, V, 2]
    xy = cams.pixels_to_normalized(uv).permute(0, 3, 1, 2, 4)  # [F, V, D, J, 2]
    miss = det.kpts[..., 2] <= 0
    return torch.where(miss[..., None], torch.full_like(xy, float("nan")), xy)


def triangulate_sequence(
    det: Detections,
    cams: CameraSet,
    num_people: int,
    id_cfg: IdentityConfig,
    tri_cfg: TriangulationConfig,
    init_boxes: Optional[Tensor] = None,
    init_valid: Optional[Tensor] = None,
    backend: str = "auto",
    progress: Optional[Callable[[int], None]] = None,
    person_names: Optional[list[str]] = None,
    max_people: Optional[int] = None,
) -> TrackResult:
    """Run stages 2 and 3 over the whole sequence.

    Args:
        det: filtered detections (``valid`` already reflects stage 1; ``identity`` optional).
        cams: the cameras, on the compute device.
        num_people: the number of declared people (the identity boxes' people when given; the
            names new people take first otherwise).
        init_boxes: ``[V, P, 4]`` identity boxes at the first frame; they name the people they
            cover. Without them every person is found by cross-view association.
        person_names: the declared names (default ``person01..``); people found beyond them get
            names continuing the pattern.
        max_people: at most this many people (``--people N``); ``None`` = as many as found.
        progress: called with the number of frames finished.
    """
    from .tracks import declared_names

    names = declared_names(person_names, num_people)
    with single_thread(det.kpts.device):
        return _run(det, cams, names, id_cfg, tri_cfg, init_boxes, init_valid, backend, progress, max_people)


def _run(det, cams, names, id_cfg, tri_cfg, init_boxes, init_valid, backend, progress, max_people) -> TrackResult:
    from .tracks import people_from_tracks

    tr = _Tracker(det, cams, len(names), id_cfg, tri_cfg, init_boxes, init_valid, backend, max_people)
    tr.run(progress)
    boxed = None
    if init_boxes is not None:
        iv = torch.ones(init_boxes.shape[:2], dtype=torch.bool) if init_valid is None else init_valid.cpu()
        boxed = iv.any(0).tolist()
    return people_from_tracks(tr.output(), names, id_cfg, max_people, boxed=boxed)


class _Tracker:
    """The tracker's state: track slots with their last ``W`` frames, and the per-frame outputs."""

    def __init__(self, det: Detections, cams: CameraSet, num_named: int, id_cfg: IdentityConfig, tri_cfg: TriangulationConfig,
                 init_boxes: Optional[Tensor], init_valid: Optional[Tensor], backend: str, max_people: Optional[int]):
        dev = det.kpts.device
        self.dtype = dt = torch.float32 if det.kpts.dtype == torch.float32 else torch.float64
        self.dev, self.backend, self.id, self.tri = dev, backend, id_cfg, tri_cfg
        self.cams = cams.to(device=dev, dtype=dt)
        self.F, self.V, self.D = det.shape
        self.J = det.kpts.shape[-2]
        self.W = max(1, int(id_cfg.window))
        self.kpts = det.kpts.to(dt)  # [F, V, D, J, 3]
        self.valid = det.valid.to(dev)  # [F, V, D]
        xy = normalize_detections(Detections(self.kpts, det.boxes, self.valid), self.cams)
        self.xyc = torch.cat([xy, torch.zeros_like(xy[..., :1])], -1)  # [F, V, D, J, 3] (gather-friendly)
        self.boxes = det.boxes.to(device=dev, dtype=dt)
        self.hint = None if det.identity is None else det.identity.to(device=dev, dtype=torch.long)
        self.Pmat = self.cams.extrinsics  # [V, 3, 4]
        self.wh = self.cams.size.to(device=dev, dtype=dt)  # [V, 2]
        self.cap = max_people
        self.min_kpts = int(id_cfg.track_min_keypoints)
        self.birth_views = max(2, min(int(id_cfg.birth_min_views), self.V))
        # identity boxes name slots 0..M-1 until those people are first seen (first frames only)
        self.box_frames = int(tri_cfg.pre_contact_frames)
        self.init_boxes = None if init_boxes is None else init_boxes.to(device=dev, dtype=dt)
        M = 0 if init_boxes is None else int(init_boxes.shape[1])
        self.init_valid = None if init_boxes is None else (
            torch.ones(self.V, M, dtype=torch.bool, device=dev) if init_valid is None else init_valid.to(dev))
        # per slot
        self.slot_person = torch.arange(M, dtype=torch.long, device=dev)  # declared person of each slot (-1 = anonymous)
        self.ever_seen = torch.zeros(M, dtype=torch.bool, device=dev)
        self.hx = torch.zeros(self.W, M, self.J, 3, dtype=dt, device=dev)  # last W frames (oldest first)
        self.hok = torch.zeros(self.W, M, self.J, dtype=torch.bool, device=dev)
        self.hseen = torch.zeros(self.W, M, dtype=torch.bool, device=dev)
        F, V, J = self.F, self.V, self.J
        self.X = torch.zeros(F, M, J, 3, dtype=dt, device=dev)
        self.Xok = torch.zeros(F, M, J, dtype=torch.bool, device=dev)
        self.N = torch.zeros(F, M, J, dtype=torch.long, device=dev)
        self.A = torch.full((F, V, M), -1, dtype=torch.long, device=dev)
        self.seen = torch.zeros(F, M, dtype=torch.bool, device=dev)
        self.births: list[tuple[int, int, int]] = []  # (frame, slot, declared person or -1)
        self.stats = {"frames_stepped": 0, "frames_batched": 0, "batch_rounds": 0, "birth_checks": 0, "birth_candidates_rejected": 0}

    # ------------------------------------------------------------------ slots
    @property
    def S(self) -> int:
        return int(self.slot_person.numel())

    def _add_slot(self) -> int:
        dev, dt = self.dev, self.dtype
        self.slot_person = torch.cat([self.slot_person, torch.full((1,), -1, dtype=torch.long, device=dev)])
        self.ever_seen = torch.cat([self.ever_seen, torch.zeros(1, dtype=torch.bool, device=dev)])
        self.hx = torch.cat([self.hx, torch.zeros(self.W, 1, self.J, 3, dtype=dt, device=dev)], 1)
        self.hok = torch.cat([self.hok, torch.zeros(self.W, 1, self.J, dtype=torch.bool, device=dev)], 1)
        self.hseen = torch.cat([self.hseen, torch.zeros(self.W, 1, dtype=torch.bool, device=dev)], 1)
        self.X = torch.cat([self.X, torch.zeros(self.F, 1, self.J, 3, dtype=dt, device=dev)], 1)
        self.Xok = torch.cat([self.Xok, torch.zeros(self.F, 1, self.J, dtype=torch.bool, device=dev)], 1)
        self.N = torch.cat([self.N, torch.zeros(self.F, 1, self.J, dtype=torch.long, device=dev)], 1)
        self.A = torch.cat([self.A, torch.full((self.F, self.V, 1), -1, dtype=torch.long, device=dev)], 2)
        self.seen = torch.cat([self.seen, torch.zeros(self.F, 1, dtype=torch.bool, device=dev)], 1)
        return self.S - 1

    def _free_slot(self, f: int, busy: Tensor) -> int:
        """A slot for a newborn at frame ``f``: an ended one (its window reset), else a new one."""
        free = ~self.hseen.any(0) & ~busy
        if f < self.box_frames and self.init_boxes is not None:
            M = self.init_boxes.shape[1]
            free[:M] &= self.ever_seen[:M]  # named slots wait for their box
        idx = free.nonzero()
        if idx.numel():
            s = int(idx[0, 0])
            self.hx[:, s] = 0
            self.hok[:, s] = False
            self.hseen[:, s] = False
            self.slot_person[s] = -1
            return s
        return self._add_slot()

    # ------------------------------------------------------------------ batched pieces
    def _predict(self, Hx: Tensor, Hok: Tensor, Hseen: Tensor, K: int) -> tuple[Tensor, Tensor, Tensor]:
        """Predictions of ``K`` consecutive frames from ``W + K - 1`` rows of history (frame ``i``
        uses rows ``i .. i+W-1``): ``pred [K, S, J, 3]``, ``ok [K, S, J]``, ``alive [K, S]``."""
        W = self.W
        wx = Hx.unfold(0, W, 1)[:K].permute(0, 4, 1, 2, 3)  # [K, W, S, J, 3]
        wok = Hok.unfold(0, W, 1)[:K].permute(0, 3, 1, 2)  # [K, W, S, J]
        alive = Hseen.unfold(0, W, 1)[:K].any(-1)  # [K, S]
        pred, ok = predict_next(wx, wok, self.id.predictor)
        return pred, ok & alive[..., None], alive

    def _assign(self, fr: Tensor, pred: Tensor, pok: Tensor, alive: Tensor) -> tuple[Tensor, Tensor]:
        """Assignment and gate of frames ``fr [K]``: ``a [K, V, S]``, ``keep [K, V, S, J]``."""
        K, S = fr.numel(), self.S
        if S == 0:
            return (torch.full((K, self.V, 0), -1, dtype=torch.long, device=self.dev),
                    torch.zeros(K, self.V, 0, self.J, dtype=torch.bool, device=self.dev))
        uv, z = self.cams.project(pred)  # [K, S, J, V, 2], [K, S, J, V]
        uv = uv.permute(0, 3, 1, 2, 4)  # [K, V, S, J, 2]
        z = z.permute(0, 3, 1, 2)
        wh = self.wh[None, :, None, None]
        inside = (uv[..., 0] >= 0) & (uv[..., 1] >= 0) & (uv[..., 0] < wh[..., 0]) & (uv[..., 1] < wh[..., 1])
        ok = pok[:, None] & (z > 0) & inside  # [K, V, S, J]
        hint = None if self.hint is None else self.hint[fr]
        a = assign_by_prediction(self.kpts[fr], self.valid[fr], uv, ok, self.id.min_match_oks, backend=self.backend,
                                 hint=hint, slot_person=self.slot_person, hint_bonus=self.id.prompt_bonus)
        keep = torch.ones_like(ok)
        if self.id.gate_px_frac > 0:
            # gate relative to the diagonal of the predicted pose's box in this view
            big = torch.finfo(self.dtype).max
            um = torch.where(ok, uv[..., 0], torch.full_like(uv[..., 0], big)).amin(-1)
            uM = torch.where(ok, uv[..., 0], torch.full_like(uv[..., 0], -big)).amax(-1)
            vm = torch.where(ok, uv[..., 1], torch.full_like(uv[..., 1], big)).amin(-1)
            vM = torch.where(ok, uv[..., 1], torch.full_like(uv[..., 1], -big)).amax(-1)
            diag = torch.sqrt((uM - um).clamp_min(0) ** 2 + (vM - vm).clamp_min(0) ** 2)  # [K, V, S]
            obs = gather_assigned(self.kpts[fr], a)  # [K, V, S, J, 3]
            far = (obs[..., :2] - uv).norm(dim=-1) > self.id.gate_px_frac * diag[..., None]
            keep = ~(ok & far & (ok.sum(-1, keepdim=True) >= 6) & alive[:, None, :, None])
        return a, keep

    def _triangulate(self, fr: Tensor, a: Tensor, keep: Tensor, thr: float) -> tuple[Tensor, Tensor, Tensor]:
        """``X [K, S, J, 3]`` (zeros where invalid), ``ok [K, S, J]``, ``n_inliers [K, S, J]``."""
        K, S = a.shape[0], a.shape[-1]
        if S == 0:
            return (torch.zeros(K, 0, self.J, 3, dtype=self.dtype, device=self.dev),
                    torch.zeros(K, 0, self.J, dtype=torch.bool, device=self.dev),
                    torch.zeros(K, 0, self.J, dtype=torch.long, device=self.dev))
        obs = gather_assigned(self.kpts[fr], a)  # [K, V, S, J, 3]
        xy = gather_assigned(self.xyc[fr], a)[..., :2]
        conf = torch.where(keep, obs[..., 2], torch.zeros_like(obs[..., 2]))
        X, _, n = triangulate_ransac(
            xy.permute(0, 2, 3, 1, 4),  # [K, S, J, V, 2]
            self.Pmat,
            conf.permute(0, 2, 3, 1),  # [K, S, J, V]
            conf_thr=thr,
            err_thr=self.tri.err_thr,
            min_views=self.tri.min_views,
            refine_steps=self.tri.refine_steps,
            huber_delta=self.tri.huber_delta,
            backend=self.backend,
        )
        ok = torch.isfinite(X).all(-1)
        return torch.where(ok[..., None], X, torch.zeros_like(X)), ok, n

    def _thr(self, f: int) -> float:
        return self.tri.conf_thr if f < self.tri.pre_contact_frames else self.tri.conf_thr_tracked

    def _unclaimed(self, fr: Tensor, a: Tensor) -> Tensor:
        """``[K, V, D]`` valid detections no track took (prompted ones excluded)."""
        K, V, S = a.shape
        taken = torch.zeros(K, V, self.D + 1, dtype=torch.bool, device=self.dev)
        taken.scatter_(2, torch.where(a >= 0, a, torch.full_like(a, self.D)), True)
        free = self.valid[fr] & ~taken[..., : self.D]
        if self.hint is not None:
            free &= self.hint[fr] < 0
        return free

    def _eventful(self, fr: Tensor, a: Tensor, alive: Tensor) -> Tensor:
        """``[K]`` frames that need the frame-by-frame step: a birth is possible there."""
        views = self._unclaimed(fr, a).any(-1).sum(-1)  # [K]
        ev = views >= self.birth_views
        if self.cap is not None:
            ev &= alive.sum(-1) < self.cap
        if self.hint is not None:
            h = self.hint[fr]  # [K, V, D]
            hv = self.valid[fr] & (h >= 0)
            has_track = (h[..., None] == self.slot_person) & alive[:, None, None, :]  # [K, V, D, S]
            ev |= (hv & ~has_track.any(-1)).any(-1).any(-1)
        return ev

    def _commit(self, f0: int, X: Tensor, ok: Tensor, n: Tensor, a: Tensor, seen: Tensor) -> None:
        """Store frames ``f0 .. f0+K-1`` and slide the window."""
        K = X.shape[0]
        sl = slice(f0, f0 + K)
        self.X[sl], self.Xok[sl], self.N[sl], self.A[sl], self.seen[sl] = X, ok, n, a, seen
        self.ever_seen |= seen.any(0)
        W = self.W
        self.hx = torch.cat([self.hx, X], 0)[-W:]
        self.hok = torch.cat([self.hok, ok], 0)[-W:]
        self.hseen = torch.cat([self.hseen, seen], 0)[-W:]

    # ------------------------------------------------------------------ the frame-by-frame step
    def step(self, f: int) -> None:
        """Frame ``f`` on its own: assignment, identity boxes, triangulation, births."""
        fr = torch.tensor([f], device=self.dev)
        pred, pok, alive = self._predict(self.hx, self.hok, self.hseen, 1)
        a, keep = self._assign(fr, pred, pok, alive)
        if self.init_boxes is not None and f < self.box_frames:
            a = self._boxes(f, a, alive)
        a = self._hint_births(f, a, alive)
        if a.shape[-1] != keep.shape[-2]:  # slots were added
            keep = torch.cat([keep, torch.ones(1, self.V, a.shape[-1] - keep.shape[-2], self.J, dtype=torch.bool, device=self.dev)], 2)
        thr = self._thr(f)
        X, ok, n = self._triangulate(fr, a, keep, thr)
        seen = ok.sum(-1) >= self.min_kpts
        M = 0 if self.init_boxes is None else self.init_boxes.shape[1]
        for s in (seen[0, :M] & ~self.ever_seen[:M] & (self.slot_person[:M] >= 0)).nonzero()[:, 0].tolist():
            self.births.append((f, s, int(self.slot_person[s])))  # a named person's track starts at their box
        X, ok, n, a, seen = self._births(f, fr, X, ok, n, a, seen, thr)
        self._commit(f, X, ok, n, a, seen)
        self.stats["frames_stepped"] += 1

    def _boxes(self, f: int, a: Tensor, alive: Tensor) -> Tensor:
        """Named slots not seen yet take the detections their identity boxes cover."""
        M = self.init_boxes.shape[1]
        pending = ~self.ever_seen[:M] & ~alive[0, :M]
        if not bool(pending.any()):
            return a
        taken = torch.zeros(self.V, self.D + 1, dtype=torch.bool, device=self.dev)
        a0 = a[0]
        taken.scatter_(1, torch.where(a0 >= 0, a0, torch.full_like(a0, self.D)), True)
        v_f = self.valid[f] & ~taken[:, : self.D]
        if self.hint is not None:
            v_f &= self.hint[f] < 0
        a_box = assign_by_boxes(self.boxes[f], v_f, self.init_boxes, self.init_valid, self.id.init_box_min_iou)  # [V, M]
        out = a0.clone()
        out[:, :M] = torch.where(pending[None, :], a_box, a0[:, :M])
        return out[None]

    def _hint_births(self, f: int, a: Tensor, alive: Tensor) -> Tensor:
        """A person with prompted detections in >= 2 views and no live track starts one here."""
        if self.hint is None:
            return a
        h, v = self.hint[f], self.valid[f]
        persons = torch.unique(h[v & (h >= 0)]).tolist()
        live = set(self.slot_person[alive[0]].tolist())
        for i in persons:
            if i in live:
                continue
            m = v & (h == i)  # [V, D]
            # an anonymous live track that took this person's prompted detections is that person
            # (born from the detector's boxes before the image stage first prompted them)
            a0 = a[0, :, : alive.shape[1]]  # [V, S]
            took = torch.gather(m, 1, a0.clamp_min(0)) & (a0 >= 0)  # [V, S]
            votes = torch.where(alive[0] & (self.slot_person[: alive.shape[1]] < 0), took.sum(0), torch.zeros_like(took[0], dtype=torch.long))
            if votes.numel() and int(votes.max()) > 0:
                s = int(votes.argmax())
                self.slot_person[s] = i
                k = max(j for j, b in enumerate(self.births) if b[1] == s)  # the birth of its current track
                self.births[k] = (self.births[k][0], s, int(i))
                live.add(i)
                continue
            if int(m.any(-1).sum()) < 2:
                continue
            if self.cap is not None and int(alive[0].sum()) + 1 > self.cap:
                break
            busy = torch.zeros(self.S, dtype=torch.bool, device=self.dev)
            busy[: alive.shape[1]] = alive[0]
            s = self._free_slot(f, busy)
            self.slot_person[s] = i
            first = torch.where(m, torch.arange(self.D, device=self.dev), torch.full_like(h, self.D)).amin(-1)
            col = torch.where(first < self.D, first, torch.full_like(first, -1))
            if s >= a.shape[-1]:
                a = torch.cat([a, torch.full((1, self.V, s + 1 - a.shape[-1]), -1, dtype=torch.long, device=self.dev)], 2)
                alive = torch.cat([alive, torch.zeros(1, s + 1 - alive.shape[1], dtype=torch.bool, device=self.dev)], 1)
            a[0, :, s] = col
            alive[0, s] = True
            self.births.append((f, s, int(i)))
        return a

    def _explained(self, f: int, X: Tensor, ok: Tensor) -> Tensor:
        """``[V, D]`` detections of frame ``f`` that a person triangulated in it explains: OKS above
        ``identity.explained_oks`` with that person's projection (left-over detections of a tracked
        person -- a duplicate, a view its track did not take -- are no birth material)."""
        if X.shape[0] == 0 or not bool(ok.any()):
            return torch.zeros(self.V, self.D, dtype=torch.bool, device=self.dev)
        uv, z = self.cams.project(X)  # [S, J, V, 2], [S, J, V]
        vis = ok[..., None] & (z > 0)
        pose = torch.cat([uv, vis[..., None].to(uv.dtype)], -1).permute(2, 0, 1, 3)  # [V, S, J, 3]
        o = oks(pose, self.kpts[f], kpt_thr=0.2, backend=self.backend)  # [V, S, D]
        return (o > self.id.explained_oks).any(1) & self.valid[f]

    def _births(self, f, fr, X, ok, n, a, seen, thr):
        """New tracks from the detections no track claimed (module docstring)."""
        free = self._unclaimed(fr, a)[0]  # [V, D]
        if int(free.any(-1).sum()) < self.birth_views:
            return X, ok, n, a, seen
        active = seen[0] | self.hseen.any(0)[: seen.shape[1]]
        room = None if self.cap is None else self.cap - int(active.sum())
        if room is not None and room <= 0:
            return X, ok, n, a, seen
        self.stats["birth_checks"] += 1
        free &= ~self._explained(f, X[0], ok[0])
        if int(free.any(-1).sum()) < self.birth_views:
            return X, ok, n, a, seen
        n_max = int(free.sum(-1).max())
        if room is not None:
            n_max = min(n_max, room)
        cols = bootstrap_people(self.kpts[f], self.xyc[f][..., :2], self.valid[f], self.cams, n_max, taken=~free)  # [V, n]
        if cols.shape[1] == 0:
            return X, ok, n, a, seen
        cols = cols[:, (cols >= 0).sum(0) >= self.birth_views]
        if cols.shape[1] == 0:
            return X, ok, n, a, seen
        cand = cols.T[None]  # [1, C, V] -> assignment [1, V, C]
        keep = torch.ones(1, self.V, cand.shape[1], self.J, dtype=torch.bool, device=self.dev)
        Xc, okc, nc = self._triangulate(fr, cand.transpose(1, 2), keep, thr)  # [1, C, J, ...]
        good = okc[0].sum(-1) >= self.min_kpts  # [C]
        if X.shape[1]:
            # mean distance to every track triangulated in this frame, over keypoints valid in both
            both = okc[0][:, None] & ok[0][None]  # [C, S, J]
            d = (Xc[0][:, None] - X[0][None]).norm(dim=-1)
            md = (d * both).sum(-1) / both.sum(-1).clamp_min(1)
            near = (both.sum(-1) >= 3) & (md < self.id.ghost_distance)
            good &= ~near.any(-1)
        self.stats["birth_candidates_rejected"] += int((~good).sum())
        busy = seen[0] | a[0].ge(0).any(0)
        for c in good.nonzero()[:, 0].tolist():
            s = self._free_slot(f, torch.cat([busy, torch.zeros(self.S - busy.numel(), dtype=torch.bool, device=self.dev)]))
            grow = self.S - X.shape[1]
            if grow > 0:
                X = torch.cat([X, X.new_zeros(1, grow, self.J, 3)], 1)
                ok = torch.cat([ok, ok.new_zeros(1, grow, self.J)], 1)
                n = torch.cat([n, n.new_zeros(1, grow, self.J)], 1)
                a = torch.cat([a, a.new_full((1, self.V, grow), -1)], 2)
                seen = torch.cat([seen, seen.new_zeros(1, grow)], 1)
                busy = torch.cat([busy, busy.new_zeros(grow)])
            X[0, s], ok[0, s], n[0, s], a[0, :, s], seen[0, s] = Xc[0, c], okc[0, c], nc[0, c], cand[0, c], True
            busy[s] = True
            self.births.append((f, s, -1))
        return X, ok, n, a, seen

    # ------------------------------------------------------------------ batched frames
    def batch(self, f: int, b: int) -> tuple[int, bool]:
        """Frames ``f .. b-1`` at once (module docstring); returns the first frame not done and
        whether it needs the frame-by-frame step (a birth is possible there)."""
        K = b - f
        fr = torch.arange(f, b, device=self.dev)
        # first guess of every frame's predecessor: the last pose held (as if standing still; a
        # constant-velocity guess from noisy single-frame differences changed more assignments)
        pred0, pok0, alive0 = self._predict(self.hx, self.hok, self.hseen, 1)
        Hx = torch.cat([self.hx, pred0.expand(K - 1, -1, -1, -1)], 0)
        Hok = torch.cat([self.hok, pok0.expand(K - 1, -1, -1)], 0)
        Hseen = torch.cat([self.hseen, alive0.expand(K - 1, -1)], 0)
        pred, pok, alive = self._predict(Hx, Hok, Hseen, K)
        a, keep = self._assign(fr, pred, pok, alive)
        thr = self.tri.conf_thr_tracked
        X, ok, n = self._triangulate(fr, a, keep, thr)
        while True:
            self.stats["batch_rounds"] += 1
            seen = ok.sum(-1) >= self.min_kpts
            K = fr.numel()
            Hx = torch.cat([self.hx, X[:-1]], 0)
            Hok = torch.cat([self.hok, ok[:-1]], 0)
            Hseen = torch.cat([self.hseen, seen[:-1]], 0)
            pred, pok, alive = self._predict(Hx, Hok, Hseen, K)
            a2, keep2 = self._assign(fr, pred, pok, alive)
            same = (a2 == a).flatten(1).all(1) & (keep2 == keep).flatten(1).all(1)  # [K]
            bad = (~same).nonzero()
            g = int(bad[0, 0]) if bad.numel() else K  # frames < g are exact; frame g's a2 is exact
            ev = self._eventful(fr[: g + 1], a2[: g + 1], alive[: g + 1]).nonzero()
            e = int(ev[0, 0]) if ev.numel() else K + 1
            m = min(g, e)
            if m > 0:
                self._commit(int(fr[0]), X[:m], ok[:m], n[:m], a[:m], seen[:m])
                self.stats["frames_batched"] += m
            if e <= g or m >= K:
                return int(fr[0]) + m, e <= g
            # next round: the frames left, with the recomputed assignments; only those whose
            # assignment or gate changed are triangulated again (the others' inputs are the same)
            fr, a, keep, X, ok, n = fr[m:], a2[m:], keep2[m:], X[m:].clone(), ok[m:].clone(), n[m:].clone()
            redo = (~same[m:]).nonzero()[:, 0]
            Xr, okr, nr = self._triangulate(fr[redo], a[redo], keep[redo], thr)
            X[redo], ok[redo], n[redo] = Xr, okr, nr
            self.stats["frames_retriangulated"] = self.stats.get("frames_retriangulated", 0) + int(redo.numel())

    # ------------------------------------------------------------------ compiled loop (CPU)
    def _use_numba(self) -> bool:
        if self.dev.type != "cpu" or self.id.predictor != "previous" or (self.backend or "auto") not in ("auto", "numba"):
            return False
        try:
            import numba  # noqa: F401
        except ImportError:  # pragma: no cover - numba is a dependency
            return False
        return True

    def steady_numba(self, f: int, b: int) -> tuple[int, bool]:
        """Frames ``f .. b-1`` through :func:`~h4d_fast.pipeline._track_numba.steady_frames` (same
        contract as :meth:`batch`)."""
        import numpy as np

        from ..constants import COCO_SIGMAS
        from ..ops._triangulate_numba import _as_dtype
        from ._track_numba import steady_frames

        if not hasattr(self, "_nb"):
            c = self.cams.to(dtype=torch.float64)
            hint = self.hint if self.hint is not None else torch.full((self.F, self.V, self.D), -1, dtype=torch.long)
            self._nb = tuple(np.ascontiguousarray(x) for x in (
                self.kpts.double().numpy(), self.valid.numpy(), self.xyc[..., :2].double().numpy(), hint.numpy(),
                c.R.numpy(), c.t.numpy(), c.intrinsics.numpy(), c.dist.numpy(), c.model_id.numpy(),
                c.size.double().numpy(), c.extrinsics.numpy(), ((2 * np.asarray(COCO_SIGMAS, dtype=np.float64)) ** 2)[: self.J]))
        self.hx, self.hok, self.hseen = self.hx.contiguous(), self.hok.contiguous(), self.hseen.contiguous()
        for name in ("X", "Xok", "N", "A", "seen"):
            setattr(self, name, getattr(self, name).contiguous())
        dt, tri = self.dtype, self.tri
        nxt = steady_frames(
            f, b, *self._nb[:10], self._nb[10], self._nb[11], self.slot_person.numpy(),
            self.hx.numpy(), self.hok.numpy(), self.hseen.numpy(), float(self.id.min_match_oks), float(self.id.prompt_bonus), float(self.id.gate_px_frac),
            _as_dtype(tri.conf_thr_tracked, dt), _as_dtype(tri.err_thr, dt), int(tri.min_views), int(tri.refine_steps),
            _as_dtype(tri.huber_delta, dt), self.min_kpts, self.birth_views, -1 if self.cap is None else int(self.cap),
            dt == torch.float32, self.X.numpy(), self.Xok.numpy(), self.N.numpy(), self.A.numpy(), self.seen.numpy())
        if nxt > f:
            self.ever_seen |= self.seen[f:nxt].any(0)
            self.stats["frames_compiled"] = self.stats.get("frames_compiled", 0) + (nxt - f)
        return int(nxt), nxt < b

    # ------------------------------------------------------------------ driver
    def run(self, progress: Optional[Callable[[int], None]] = None) -> None:
        f = 0
        K = max(1, int(self.id.batch_frames))
        seq_until = max(self.tri.pre_contact_frames, self.box_frames if self.init_boxes is not None else 0)
        compiled = K > 1 and self._use_numba()
        while f < self.F:
            if K == 1 or f < seq_until or self.S == 0:
                self.step(f)
                f += 1
            else:
                f, event = self.steady_numba(f, self.F) if compiled else self.batch(f, min(self.F, f + K))
                if event:  # a birth is possible here
                    self.step(f)
                    f += 1
            if progress is not None:
                progress(f)

    def output(self) -> dict:
        """Per-slot results and the births (input of :func:`~h4d_fast.pipeline.tracks.people_from_tracks`)."""
        poses = torch.cat([self.X, self.Xok[..., None].to(self.dtype)], -1)
        return {"poses": poses, "seen": self.seen, "assign": self.A, "n_inliers": self.N, "births": list(self.births),
                "stats": dict(self.stats)}
