"""Run by .ci/wheel_check with the fresh virtual environment's Python, from outside the checkout:
the installed wheel (not the checkout) is imported, carries every CUDA source of the checkout
(found and include-inlined through the package) and the same code fingerprint.

    python wheel_check.py <venv prefix> <fingerprint of the checkout> <name.cu> ...
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def main(argv: list[str]) -> int:
    prefix, fingerprint, expected = Path(argv[0]).resolve(), argv[1], sorted(argv[2:])
    import h4d_fast
    from h4d_fast.ops._cuda_source import kernel_source
    from h4d_fast.pipeline.code_keys import code_fingerprint

    where = Path(h4d_fast.__file__).resolve()
    if prefix not in where.parents:
        print(f"FAIL: h4d_fast imported from {where}, not from the wheel installed in {prefix}")
        return 1
    csrc = resources.files("h4d_fast") / "csrc"
    found = sorted(p.name for p in csrc.iterdir() if p.name.endswith(".cu"))
    if found != expected or not expected:
        print(f"FAIL: the wheel's h4d_fast/csrc holds {found}, the checkout {expected}")
        return 1
    for name in found:
        src = kernel_source(name)
        if 'extern "C"' not in src or '#include "' in src:
            print(f"FAIL: {name}: no kernel entry point, or an include left unresolved")
            return 1
    if code_fingerprint() != fingerprint:
        print("FAIL: the installed package's code fingerprint differs from the checkout's (a source file missing from the wheel?)")
        return 1
    print(f"wheel OK: h4d_fast from {where.parent}; CUDA sources {', '.join(found)}; code fingerprint {fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
