"""Video and image frames for the visualizer: frame slices, image reading, source videos and the video writer (split from :mod:`h4d_fast.viz`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError


# ============================================================================ driver
def _frame_slice(spec: str | None, F: int) -> list[int]:
    if not spec:
        return list(range(F))
    parts = [p.strip() for p in str(spec).split(":")]
    try:
        vals = [int(p) if p else None for p in parts]
    except ValueError:
        raise InputError(None, f"expected START:STOP[:STEP], got {spec!r}", field="--frames") from None
    if len(vals) == 1:
        return [vals[0]] if vals[0] is not None and 0 <= vals[0] < F else []
    return list(range(F))[slice(*vals[:3])]


def _read_image(folder: Path, fid: int, size: tuple[int, int]) -> np.ndarray | None:
    import cv2

    for ext in (".jpg", ".jpeg", ".png"):
        p = folder / f"{fid:05d}{ext}"
        if p.is_file():
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                if (img.shape[1], img.shape[0]) != size:
                    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                return img
    return None


class _VideoFrames:
    """Frames of one camera's source video (``import.json`` of an imported sequence), read in
    order and re-seeked only on jumps; ``frame_of`` maps a sequence frame id to a video frame."""

    def __init__(self, path: Path, frame_of: Callable[[int], int | None]):
        import cv2

        self.cap = cv2.VideoCapture(str(path))
        self.frame_of = frame_of
        self.next = 0

    def read(self, fid: int, size: tuple[int, int]) -> np.ndarray | None:
        import cv2

        k = self.frame_of(fid)
        if k is None or not self.cap.isOpened():
            return None
        if k != self.next:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, k)
        ok, img = self.cap.read()
        self.next = k + 1
        if not ok or img is None:
            return None
        if (img.shape[1], img.shape[0]) != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        return img

    def close(self) -> None:
        self.cap.release()


def _source_videos(seq: Path) -> tuple[dict[str, Path], Callable[[int], int | None]]:
    """Per camera source video of an imported sequence and the frame map (none for others)."""
    from .io.importer import read_import_report

    rep = read_import_report(seq)
    if not rep:
        return {}, lambda fid: None
    vids = {c["name"]: Path(c["video"]) for c in rep.get("cameras", []) if isinstance(c, dict) and c.get("video")}
    src = [int(x) for x in rep.get("source_frame_ids", [])]

    def frame_of(fid: int) -> int | None:
        # imported frames are written as 1..F in source order; a source frame id is the video's
        # 0-based frame index (OpenPose / MediaPipe numbering)
        return src[fid - 1] if 1 <= fid <= len(src) else None

    return {k: v for k, v in vids.items() if v.is_file()}, frame_of


class _Writer:
    def __init__(self, path: Path, fmt: str, fps: float, size: tuple[int, int]):
        import cv2

        self.fmt, self.path, self.size, self.fps = fmt, path, size, fps
        self.frames: list[np.ndarray] = []
        self.n = 0
        if fmt == "mp4":
            self.w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
            if not self.w.isOpened():
                raise InputError(path, "OpenCV cannot write MP4 (mp4v) here; use --format png or gif")
        elif fmt == "png":
            path.mkdir(parents=True, exist_ok=True)

    def write(self, img: np.ndarray, fid: int) -> None:
        import cv2

        self.n += 1
        if self.fmt == "mp4":
            self.w.write(img)
        elif self.fmt == "png":
            cv2.imwrite(str(self.path / f"{fid:05d}.png"), img)
        else:
            self.frames.append(img)

    def close(self) -> None:
        import cv2

        if self.fmt == "mp4":
            self.w.release()
        elif self.fmt == "gif":
            if not hasattr(cv2, "imwriteanimation"):
                raise InputError(self.path, "this OpenCV cannot write GIF (needs >= 4.11); use --format mp4 or png")
            a = cv2.Animation()
            a.frames = self.frames
            a.durations = [int(round(1000 / self.fps))] * len(self.frames)
            cv2.imwriteanimation(str(self.path), a)
