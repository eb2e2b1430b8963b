"""Small batched rotation helpers (torch): axis-angle <-> matrix, elementary rotations.

Their home is :mod:`h4d_fast.rotations`; this module re-exports them for the synthetic-data code.
"""

from __future__ import annotations

from ..rotations import (  # noqa: F401 (re-exported)
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_axis_angle,
    random_rotation,
    rot_x,
    rot_y,
    rot_z,
    skew,
)
