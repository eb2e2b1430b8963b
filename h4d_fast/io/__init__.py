"""File formats: COLMAP models, 2D detection files, the Harmony4D sequence folder, atomic writes."""

from .colmap import read_colmap, write_colmap
from .detections import (
    LoadReport,
    load_camera_detections,
    pack_detections,
    read_frame_detections,
    unpack_detections,
    write_frame_json,
    write_frame_npy,
)
from .harmony4d import (
    SequenceLayout,
    read_ground_truth,
    read_meta,
    read_poses3d,
    read_sequence,
    write_poses3d,
    write_sequence,
)

__all__ = [
    "LoadReport",
    "SequenceLayout",
    "load_camera_detections",
    "pack_detections",
    "read_colmap",
    "read_frame_detections",
    "read_ground_truth",
    "read_meta",
    "read_poses3d",
    "read_sequence",
    "unpack_detections",
    "write_colmap",
    "write_frame_json",
    "write_frame_npy",
    "write_poses3d",
    "write_sequence",
]
