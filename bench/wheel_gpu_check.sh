#!/usr/bin/env bash
# The GPU tests against the INSTALLED WHEEL, not the checkout (issue 16: "pip install of the built
# wheel + python -m pytest -m gpu passes on the GPU machine").
#
# Here (CPU machine, repository root), once per commit: build the wheel into the ignored .whl/
# folder, beside the dependency wheels of bench/README.md's "GPU run":
#
#     rm -f .whl/h4d_fast-*.whl && pip wheel . --no-deps --no-build-isolation -w .whl/
#
# Then on the device, from the checkout root, carry [".whl", ".h4dcache"], kind nvidia-h100-x1,
# timeout_s 600:
#
#     bash bench/wheel_gpu_check.sh
#
# It installs .whl/*.whl (h4d_fast's wheel and the dependency wheels; no index, no dependencies;
# built on the device if .whl/ holds no h4d_fast wheel) into /tmp/wheel_site, copies tests/, bench/
# (the tests' reference implementations) and pyproject.toml (pytest's markers) to /tmp/wheel_tests,
# checks from there that h4d_fast is imported from /tmp/wheel_site and finds its CUDA sources, then
# runs `python3 -m pytest -m gpu` there. Logs and a JUnit file go to $OUT/wheel_gpu/ when OUT is set.
set -uo pipefail
REPO=$PWD
SITE=/tmp/wheel_site
WORK=/tmp/wheel_tests
R=${OUT:-/tmp}/wheel_gpu
mkdir -p "$R"
rm -rf "$SITE" "$WORK" /tmp/wheel_dist
shopt -s nullglob
wheels=(.whl/*.whl)
own=(.whl/h4d_fast-*.whl)
if [ ${#own[@]} -eq 0 ]; then
    python3 -m pip wheel . --no-deps --no-build-isolation -q -w /tmp/wheel_dist || { echo "FAIL: cannot build the wheel"; exit 1; }
    wheels+=(/tmp/wheel_dist/h4d_fast-*.whl)
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" || { echo "FAIL: pip install"; exit 1; }
mkdir -p "$WORK"
cp -r tests bench pyproject.toml "$WORK"/
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +
cd "$WORK"   # python -m puts the current folder (tests/ and bench/, no h4d_fast) on sys.path
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1 H4D_CACHE=$REPO/.h4dcache
python3 - "$SITE" <<'PY' 2>&1 | tee "$R/where.txt" || exit 1
import sys
from pathlib import Path

import h4d_fast
from h4d_fast.ops._cuda_source import kernel_source

site = Path(sys.argv[1]).resolve()
where = Path(h4d_fast.__file__).resolve()
assert site in where.parents, f"h4d_fast imported from {where}, not from {site}"
import importlib.resources as r

names = sorted(p.name for p in (r.files("h4d_fast") / "csrc").iterdir() if p.name.endswith(".cu"))
assert names and all('extern "C"' in kernel_source(n) for n in names), names
print(f"h4d_fast from {where.parent}; CUDA sources {names}")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$R/nvidia-smi.txt" 2>&1
timeout -k 10 540 python3 -m pytest -q -p no:cacheprovider -m gpu -rsfE --tb=short --durations=10 tests --junitxml="$R/pytest_gpu_wheel.xml" 2>&1 | tee "$R/pytest_gpu_wheel.log"
rc=${PIPESTATUS[0]}
echo "pytest -m gpu against the wheel: rc=$rc" | tee -a "$R/pytest_gpu_wheel.log"
exit "$rc"
