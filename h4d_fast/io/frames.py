"""Frames in: every camera's images (or video), decoded in batches ahead of their use.

Where a camera's frames come from (:func:`frame_sources`):

* ``SEQ/exo/camXX/images/%05d.jpg`` (also ``.jpeg`` / ``.png``), the Harmony4D layout: the file's
  number is the sequence frame id;
* else the camera's source video recorded by ``h4d import`` in ``SEQ/import.json`` (Pose2Sim and
  Anipose keep ``videos/camXX.mp4``): sequence frame ``k`` (``1..F``) is the video's frame
  ``source_frame_ids[k - 1]`` (0-based);
* neither: an :class:`~h4d_fast.errors.InputError` naming the images folder the camera lacks.

:class:`FrameLoader` yields :class:`FrameBatch` es of ``batch_frames`` frames x all cameras as one
``uint8`` tensor on the compute device, decoded by a background thread while the caller runs the
models on the previous batch (``prefetch`` batches ahead). Decoding:

* JPEG on a CUDA device with torchvision importable: nvJPEG, batched (``torchvision.io.decode_jpeg``
  on the device), the files read by a thread pool;
* otherwise (and for PNG): ``cv2.imdecode`` on a thread pool (OpenCV releases the GIL);
* video: one sequential reader per camera (PyAV when installed, else OpenCV), cameras in parallel.

A missing frame file, a file that is not a complete image, a video that cannot be opened or ends
early: an InputError naming the file, raised in the caller's thread before anything is written.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError

__all__ = [
    "IMAGE_EXTS",
    "FrameBatch",
    "FrameLoader",
    "ImageFolder",
    "VideoFile",
    "decode_image",
    "frame_sources",
    "has_frame_sources",
    "scan_images",
    "sequence_frame_ids",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_JPEG_EXTS = (".jpg", ".jpeg")


# ------------------------------------------------------------------ sources
@dataclass
class ImageFolder:
    """One camera's image files: frame id -> path."""

    camera: str
    folder: Path
    files: dict[int, Path]

    @property
    def frame_ids(self) -> list[int]:
        return sorted(self.files)

    def path_of(self, fid: int) -> Path:
        """The file of frame ``fid`` (for a missing one, the name it would have)."""
        if fid in self.files:
            return self.files[fid]
        ext = next(iter(self.files.values())).suffix if self.files else ".jpg"
        return self.folder / f"{fid:05d}{ext}"


@dataclass
class VideoFile:
    """One camera's video: sequence frame id -> video frame index (0-based)."""

    camera: str
    path: Path
    frames: dict[int, int]

    @property
    def frame_ids(self) -> list[int]:
        return sorted(self.frames)


FrameSource = Union[ImageFolder, VideoFile]


def scan_images(folder: Path) -> dict[int, Path]:
    """Image files named by their frame number (``00001.jpg``) in ``folder`` (empty when absent)."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise InputError(folder, f"cannot list the images folder ({e.strerror or e})") from None
    for e in entries:
        stem, ext = os.path.splitext(e.name)
        if ext.lower() in IMAGE_EXTS and stem.isdigit():
            fid = int(stem)
            if fid not in out or ext.lower() in _JPEG_EXTS:
                out[fid] = Path(e.path)
    return out


def _imported_videos(seq: Path) -> tuple[dict[str, Path], list[int] | None]:
    """Videos recorded by ``h4d import`` (``import.json``) and its source frame numbers."""
    from .importer import read_import_report

    rep = read_import_report(seq)
    if not rep:
        return {}, None
    vids = {str(c["name"]): Path(c["video"]) for c in rep.get("cameras", []) if isinstance(c, dict) and c.get("video")}
    src = rep.get("source_frame_ids")
    ids = [int(x) for x in src] if isinstance(src, list) and src else None
    return vids, ids


def has_frame_sources(seq: Path, cameras: Sequence[str]) -> bool:
    """Whether any camera of the sequence has images or an imported video."""
    seq = Path(seq)
    if any(scan_images(seq / "exo" / c / "images") for c in cameras):
        return True
    vids, _ = _imported_videos(seq)
    return any(c in vids for c in cameras)


def frame_sources(seq: Path, cameras: Sequence[str]) -> list[FrameSource]:
    """Each camera's frame source (see the module docstring); InputError for a camera with none."""
    seq = Path(seq)
    vids, src_ids = _imported_videos(seq)
    out: list[FrameSource] = []
    for c in cameras:
        folder = seq / "exo" / c / "images"
        files = scan_images(folder)
        if files:
            out.append(ImageFolder(c, folder, files))
            continue
        if c in vids:
            path = vids[c]
            if not path.is_file():
                raise InputError(path, f"video of camera {c} (recorded in {seq / 'import.json'}) not found")
            if src_ids is None:
                n = _video_frame_count(path)
                if n <= 0:
                    raise InputError(path, "cannot read the video's frame count (and import.json lists no source frames)")
                src_ids = list(range(n))
            out.append(VideoFile(c, path, {k + 1: int(s) for k, s in enumerate(src_ids)}))
            continue
        what = "is empty" if folder.is_dir() else "does not exist"
        raise InputError(folder, f"camera {c} has no images: this folder {what} (frames named 00001.jpg ...) and no video of it is recorded in import.json")
    return out


def sequence_frame_ids(sources: Sequence[FrameSource]) -> list[int]:
    """The union of the cameras' frame ids; InputError naming the first file a camera lacks."""
    ids = sorted(set().union(*(s.frame_ids for s in sources))) if sources else []
    if not ids:
        raise InputError(None, "no frames: the cameras have no images")
    for s in sources:
        have = s.files if isinstance(s, ImageFolder) else s.frames
        missing = [f for f in ids if f not in have]
        if missing:
            if isinstance(s, ImageFolder):
                more = f" (and {len(missing) - 1} more frames of {s.camera})" if len(missing) > 1 else ""
                raise InputError(s.path_of(missing[0]), f"image missing: other cameras have frame {missing[0]}{more}")
            raise InputError(s.path, f"the video has no frame for sequence frame {missing[0]}")
    return ids


def _video_frame_count(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
    finally:
        cap.release()


# ----------------------------------------------------------------- decoding
def read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(path, f"cannot read the image ({e.strerror or e})") from None


def _check_jpeg(data: bytes, path: Path) -> None:
    """A JPEG starts with SOI and ends with EOI (trailing padding allowed): a truncated file
    would decode partly grey without an error."""
    if data[:2] != b"\xff\xd8":
        raise InputError(path, "not a JPEG image (no start-of-image marker)")
    if b"\xff\xd9" not in data[-64:]:
        raise InputError(path, "truncated JPEG image (no end-of-image marker)")


def decode_image(data: bytes, path: Path) -> np.ndarray:
    """``[H, W, 3]`` ``uint8`` RGB of an encoded image (OpenCV); InputError when it is not one."""
    import cv2

    if path.suffix.lower() in _JPEG_EXTS:
        _check_jpeg(data, path)
    if not data:
        raise InputError(path, "empty image file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR))
    if img is None or img.ndim != 3:
        raise InputError(path, "cannot decode the image (not a readable JPEG or PNG)")
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


class _VideoReader:
    """Sequential frames of one video (PyAV when installed, else OpenCV), by frame index."""

    def __init__(self, path: Path):
        self.path = path
        self.next = 0
        self._av = None
        self._cap = None
        self._open()

    def _open(self) -> None:
        self.next = 0
        try:
            import av  # type: ignore[import-not-found]
        except ImportError:
            av = None
        if av is not None:
            try:
                self._av = av.open(str(self.path))
                stream = self._av.streams.video[0]
                stream.thread_type = "AUTO"
                self._iter = self._av.decode(stream)
                return
            except Exception as e:  # noqa: BLE001 - reported as the file's problem
                raise InputError(self.path, f"cannot open the video ({type(e).__name__}: {e})") from None
        import cv2

        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise InputError(self.path, "cannot open the video (not a video file OpenCV can read)")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        if self._av is not None:
            self._av.close()
        self._cap = self._av = None

    def _grab(self, keep: bool) -> np.ndarray | None:
        if self._av is not None:
            try:
                fr = next(self._iter)
            except StopIteration:
                return None
            except Exception as e:  # noqa: BLE001
                raise InputError(self.path, f"cannot decode the video ({type(e).__name__}: {e})") from None
            return fr.to_ndarray(format="rgb24") if keep else np.empty(0)
        import cv2

        if not keep:
            return np.empty(0) if self._cap.grab() else None
        ok, img = self._cap.read()
        if not ok or img is None:
            return None
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def read(self, index: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB of frame ``index``."""
        if index < self.next:
            self.close()
            self._open()
        while self.next < index:
            if self._grab(False) is None:
                raise InputError(self.path, f"the video ends after {self.next} frames; frame {index} (0-based) is needed")
            self.next += 1
        img = self._grab(True)
        if img is None:
            raise InputError(self.path, f"the video ends after {self.next} frames; frame {index} (0-based) is needed")
        self.next += 1
        return img


def _nvjpeg_decoder(device: torch.device):
    """``decode(list[bytes]) -> list[[3, H, W] uint8 RGB]`` on ``device`` via torchvision, or None."""
    if device.type != "cuda":
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - torchvision absent or built for another torch
        return None

    def decode(datas: list[bytes]) -> list[Tensor]:
        ts = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        return decode_jpeg(ts, device=device, mode=ImageReadMode.RGB)

    return decode


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------- loader
@dataclass
class FrameBatch:
    """Frames ``positions`` (indices into the loader's frame list) of every camera.

    Attributes:
        images: ``[B, V, H, W, 3]`` ``uint8`` RGB on the device, zero-padded to the batch's largest image.
        sizes: ``[B, V, 2]`` (CPU int64) width, height of each image before padding.
        thumbs: ``[B, V, 3, h, w]`` float images for a person detector (``thumb_side`` pixels on the
            long side of the padded size), or None; ``thumb_scale`` = ``(sx, sy)`` thumb / image pixels.
    """

    positions: list[int]
    frame_ids: list[int]
    images: Tensor
    sizes: Tensor
    thumbs: Tensor | None = None
    thumb_scale: tuple[float, float] = (1.0, 1.0)
    decode_s: float = 0.0
    decoder: str = "cpu"
    extra: dict = field(default_factory=dict)


class FrameLoader:
    """Batches of all cameras' frames, decoded by a background thread ahead of use.

    Args:
        sources: one :data:`FrameSource` per camera (the batch's view order).
        frame_ids: the sequence's frame ids (``positions`` index into it).
        positions: which frames to load, in this order (default all).
        batch_frames: frames per batch.
        device: where the batches' tensors live.
        threads: CPU decoding threads (0: one per CPU).
        decoder: ``auto`` (nvJPEG on CUDA when torchvision imports), ``gpu`` (required), ``cpu``.
        prefetch: batches decoded ahead.
        thumb_side: also give ``thumbs`` at this long side (for the detector).

    Iterate it (once) inside ``with``; an error while decoding is raised by the iteration.
    """

    def __init__(self, sources: Sequence[FrameSource], frame_ids: Sequence[int], positions: Sequence[int] | None = None,
                 batch_frames: int = 8, device: torch.device | str = "cpu", threads: int = 0, decoder: str = "auto",
                 prefetch: int = 2, thumb_side: int | None = None):
        self.sources = list(sources)
        self.frame_ids = list(frame_ids)
        self.positions = list(range(len(self.frame_ids))) if positions is None else [int(p) for p in positions]
        self.batch_frames = max(1, int(batch_frames))
        self.device = torch.device(device)
        self.threads = int(threads) if threads and threads > 0 else default_threads()
        self.prefetch = max(1, int(prefetch))
        self.thumb_side = thumb_side
        self._gpu = _nvjpeg_decoder(self.device) if decoder in ("auto", "gpu") else None
        if decoder == "gpu" and self._gpu is None:
            raise InputError(None, "detect.decoder=gpu needs a CUDA device and torchvision (nvJPEG); use auto or cpu", field="detect.decoder")
        self.decoder = "nvjpeg" if self._gpu is not None else "cpu"
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="h4d-decode")
        self._videos: dict[int, _VideoReader] = {}
        self._q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __len__(self) -> int:
        return -(-len(self.positions) // self.batch_frames)

    # -- producer
    def _decode_cpu(self, v: int, fid: int) -> np.ndarray:
        src = self.sources[v]
        if isinstance(src, ImageFolder):
            path = src.path_of(fid)
            return decode_image(read_file(path), path)
        raise AssertionError("videos are read per camera")

    def _read_video(self, v: int, fids: list[int]) -> list[np.ndarray]:
        src = self.sources[v]
        assert isinstance(src, VideoFile)
        rd = self._videos.get(v)
        if rd is None:
            rd = self._videos[v] = _VideoReader(src.path)
        return [rd.read(src.frames[f]) for f in fids]

    def _decode_batch(self, positions: list[int]) -> FrameBatch:
        import time

        t0 = time.perf_counter()
        fids = [self.frame_ids[p] for p in positions]
        B, V = len(fids), len(self.sources)
        arrays: list[list[np.ndarray | Tensor | None]] = [[None] * V for _ in range(B)]
        futures = []
        gpu_items: list[tuple[int, int, Path]] = []
        for v, src in enumerate(self.sources):
            if isinstance(src, VideoFile):
                futures.append(("video", v, self._pool.submit(self._read_video, v, fids)))
                continue
            for b, f in enumerate(fids):
                path = src.path_of(f)
                if self._gpu is not None and path.suffix.lower() in _JPEG_EXTS:
                    gpu_items.append((b, v, path))
                else:
                    futures.append(("image", (b, v), self._pool.submit(self._decode_cpu, v, f)))
        if gpu_items:
            datas = list(self._pool.map(lambda it: read_file(it[2]), gpu_items))
            for (b, v, path), d in zip(gpu_items, datas):
                _check_jpeg(d, path)
            with torch.cuda.stream(self._stream):
                try:
                    imgs = self._gpu(datas)
                except RuntimeError:
                    imgs = []
                    for (b, v, path), d in zip(gpu_items, datas):  # find the file nvJPEG refuses
                        try:
                            imgs.append(self._gpu([d])[0])
                        except RuntimeError as e:
                            raise InputError(path, f"cannot decode the JPEG image ({e})") from None
            for (b, v, _), im in zip(gpu_items, imgs):
                arrays[b][v] = im
        for kind, key, fut in futures:
            res = fut.result()
            if kind == "video":
                for b in range(B):
                    arrays[b][key] = res[b]
            else:
                b, v = key
                arrays[b][v] = res
        sizes = torch.zeros(B, V, 2, dtype=torch.int64)
        for b in range(B):
            for v in range(V):
                a = arrays[b][v]
                h, w = (a.shape[1], a.shape[2]) if isinstance(a, Tensor) else (a.shape[0], a.shape[1])
                sizes[b, v, 0], sizes[b, v, 1] = w, h
        W, H = int(sizes[..., 0].max()), int(sizes[..., 1].max())
        if self.device.type == "cuda":
            with torch.cuda.stream(self._stream):
                images = torch.zeros(B, V, H, W, 3, dtype=torch.uint8, device=self.device)
                host = [(b, v, a) for b in range(B) for v in range(V) for a in [arrays[b][v]] if not isinstance(a, Tensor)]
                for b in range(B):
                    for v in range(V):
                        a = arrays[b][v]
                        if isinstance(a, Tensor):
                            images[b, v, : a.shape[1], : a.shape[2]] = a.permute(1, 2, 0)
                if host:
                    pinned = torch.zeros(len(host), H, W, 3, dtype=torch.uint8, pin_memory=True)
                    pn = pinned.numpy()

                    def put(i: int) -> None:
                        a = host[i][2]
                        pn[i, : a.shape[0], : a.shape[1]] = a

                    list(self._pool.map(put, range(len(host))))
                    dev = pinned.to(self.device, non_blocking=True)
                    for i, (b, v, _) in enumerate(host):
                        images[b, v] = dev[i]
                thumbs, tscale = self._thumbs(images)
                ev = torch.cuda.Event()
                ev.record(self._stream)
        else:
            images = torch.zeros(B, V, H, W, 3, dtype=torch.uint8)
            npimg = images.numpy()

            def put_cpu(i: int) -> None:
                b, v = divmod(i, V)
                a = arrays[b][v]
                npimg[b, v, : a.shape[0], : a.shape[1]] = a

            list(self._pool.map(put_cpu, range(B * V)))
            thumbs, tscale = self._thumbs(images)
            ev = None
        fb = FrameBatch(list(positions), fids, images, sizes, thumbs, tscale, time.perf_counter() - t0, self.decoder)
        fb.extra["event"] = ev
        return fb

    def _thumbs(self, images: Tensor) -> tuple[Tensor | None, tuple[float, float]]:
        if self.thumb_side is None:
            return None, (1.0, 1.0)
        from .images import resize_images

        B, V, H, W, _ = images.shape
        th, _ = resize_images(images.view(B * V, H, W, 3), int(self.thumb_side))
        h, w = th.shape[-2:]
        return th.view(B, V, 3, h, w), (w / W, h / H)

    def _produce(self) -> None:
        try:
            for s in range(0, len(self.positions), self.batch_frames):
                if self._stop.is_set():
                    return
                batch = self._decode_batch(self.positions[s : s + self.batch_frames])
                while not self._stop.is_set():
                    try:
                        self._q.put(("batch", batch), timeout=0.1)
                        break
                    except queue.Full:
                        continue
            self._q.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._q.put(("error", e))

    # -- consumer
    def __enter__(self) -> "FrameLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[FrameBatch]:
        if self._thread is not None:
            raise RuntimeError("FrameLoader can be iterated once")
        self._thread = threading.Thread(target=self._produce, name="h4d-frames", daemon=True)
        self._thread.start()
        while True:
            kind, item = self._q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            ev = item.extra.pop("event", None)
            if ev is not None:
                torch.cuda.current_stream(self.device).wait_event(ev)
                item.images.record_stream(torch.cuda.current_stream(self.device))
                if item.thumbs is not None:
                    item.thumbs.record_stream(torch.cuda.current_stream(self.device))
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._q.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        self._pool.shutdown(wait=True)
        for rd in self._videos.values():
            rd.close()
        self._videos.clear()
