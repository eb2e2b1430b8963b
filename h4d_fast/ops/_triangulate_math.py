"""Formulas of the triangulation written once in plain Python: the torch reference calls them on
tensors, and the numba and Triton kernels compile these same functions for scalars
(``numba.njit(...)(fn)`` in :mod:`h4d_fast.ops._triangulate_numba`, a Triton device function in
:mod:`h4d_fast.ops._triangulate_triton`). So they may only do arithmetic on their arguments (no
globals, no library calls).
"""


def normal_terms(w2, a0, a1, a2, a3, b0, b1, b2, b3):
    """One view's share of the DLT normal equations from its two rows ``r1 = (a0..a3)``, ``r2 = (b0..b3)``
    weighted by ``w2``: ``w2 (r1 r1^T + r2 r2^T)`` (6 unique) and ``w2 (r1[:3] r1[3] + r2[:3] r2[3])`` (3)."""
    return (
        w2 * (a0 * a0 + b0 * b0),
        w2 * (a0 * a1 + b0 * b1),
        w2 * (a0 * a2 + b0 * b2),
        w2 * (a1 * a1 + b1 * b1),
        w2 * (a1 * a2 + b1 * b2),
        w2 * (a2 * a2 + b2 * b2),
        w2 * (a0 * a3 + b0 * b3),
        w2 * (a1 * a3 + b1 * b3),
        w2 * (a2 * a3 + b2 * b3),
    )


def solve3(a, b, c, d, e, f, r0, r1, r2):
    """Adjugate solve of the symmetric ``[[a, b, c], [b, d, e], [c, e, f]] x = r``: ``(x0, x1, x2, det)``."""
    A00 = d * f - e * e
    A01 = c * e - b * f
    A02 = b * e - c * d
    A11 = a * f - c * c
    A12 = b * c - a * e
    A22 = a * d - b * b
    det = a * A00 + b * A01 + c * A02
    x0 = (A00 * r0 + A01 * r1 + A02 * r2) / det
    x1 = (A01 * r0 + A11 * r1 + A12 * r2) / det
    x2 = (A02 * r0 + A12 * r1 + A22 * r2) / det
    return x0, x1, x2, det
