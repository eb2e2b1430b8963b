#!/usr/bin/env bash
# One GPU-machine call of a session, by phase (each phase stays inside the device's 10-minute limit):
#
#   bash bench/gpu_session.sh tests   # pytest -m gpu, then the stage benchmarks (tracking, fit, pose models)
#   bash bench/gpu_session.sh bench   # python -m bench (every workload, one table)
#   bash bench/gpu_session.sh images  # python -m bench --only detect,images_to_meshes
#   bash bench/gpu_session.sh core    # the GPU tests, then a short python -m bench (issue 13's keys)
#   bash bench/gpu_session.sh final   # pytest -m gpu against the installed wheel, then the warm path (build the wheel into .whl first)
#   bash bench/gpu_session.sh verify  # the GPU tests, then issue 13's end-to-end keys and issue 12's image keys
#   bash bench/gpu_session.sh check   # the GPU tests, fresh-process profile and settings, the warm path
#   bash bench/gpu_session.sh last    # the GPU tests (a fresh machine compiles for minutes), then run-many
#   bash bench/gpu_session.sh fitprof # the fit stage alone: torch.profiler's GPU busy time and top kernels; two-loop direction, short history, no graphs
#   bash bench/gpu_session.sh probe   # the GPU tests, a cProfile of a fresh `h4d run` (bench.profile_fresh_run), issue 12's image keys
#   bash bench/gpu_session.sh measure # issue 13's figures only: the warm path, fresh `h4d run`, the fit under the profiler, run-many
#
# Run from the checkout root on the GPU machine with carry [".whl", ".h4dcache", ".bench_commit", ".demo"] (and .benchseq.tgz)
# (bench/README.md, "GPU run"): the wheels are installed into /tmp/site, the embedded models come
# from .h4dcache, the Pose2Sim demo (image workloads) from .demo. Everything is written under $OUT
# and packed into $OUT/<phase>.tar.gz (the device returns at most 8 files, 2 folders down).
# A carried .benchseq.tgz holds the bench capture generated beforehand (bench.workloads.paper_sequence;
# 120 s of a call otherwise); it is used only while its generator code is the checkout's.
set -uo pipefail
phase=${1:?phase: tests, core, verify, check, last, fitprof, probe, measure, final, bench or images}
OUT=${OUT:?set OUT}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 H4D_CACHE=$PWD/.h4dcache
# The GPU machine's Python environment holds no bytecode (.pyc) and cannot store any: every process
# compiled torch's sources again (5.2 s of a fresh `h4d run`, bench/results/2026-12-07-h100-probe/).
# pip writes the bytecode when it installs, so a user's environment has it: here it goes under a
# prefix of our own, written by the first process and read by the later ones.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/h4d-pycache
export H4D_BENCH_COMMIT=$(cat .bench_commit 2>/dev/null) H4D_DEMO_DATA=$PWD/.demo/pose2sim_demo
if [ -f .benchseq.tgz ]; then  # the bench capture generated beforehand: tar -czf .benchseq.tgz -C .benchseq .
    mkdir -p /tmp/h4d-benchseq && tar -xzf .benchseq.tgz -C /tmp/h4d-benchseq && export H4D_BENCH_SEQUENCE_CACHE=/tmp/h4d-benchseq
fi
R=$OUT/$phase
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$R/nvidia-smi.txt"
{ echo "commit $H4D_BENCH_COMMIT"; date -u; nproc; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'
  python3 -c 'import sys, torch, os; print("pycache_prefix", sys.pycache_prefix, "torch dir writable", os.access(os.path.dirname(torch.__file__), os.W_OK))'; } > "$R/env.txt" 2>&1
step() {  # step NAME SECONDS CMD...: one command with its own time cap and log
    local name=$1 cap=$2; shift 2
    local t0=$EPOCHREALTIME
    timeout -k 10 "$cap" "$@" > "$R/$name.log" 2>&1
    local rc=$?
    printf '%-18s rc=%-3s %6.1f s  %s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*" | tee -a "$R/steps.txt"
    tar -czf "$OUT/$phase.tar.gz" -C "$OUT" "$phase"  # after every step: a call cut short still returns what it measured
}
case $phase in
tests)
    step pytest_gpu 260 python3 -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$R/pytest_gpu.xml"
    step tracking 80 python3 bench/bench_tracking.py --device cuda --frames 600 --cameras 20 --repeats 5 --profile --json "$R/tracking_cuda.json"
    step fit_lbfgs 90 python3 -m bench.fit_stage --device cuda --repeats 3 --json "$R/fit_lbfgs_cuda.json"
    step fit_gn 70 python3 -m bench.fit_stage --device cuda --repeats 3 --set fit.optimizer=gn --json "$R/fit_gn_cuda.json"
    step detect_models 60 python3 bench/bench_detect_models.py --device cuda --repeats 5 --json "$R/detect_models_cuda.json"
    ;;
core)  # when device time is short: the GPU tests, then issue 13's keys
    step pytest_gpu 220 python3 -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$R/pytest_gpu.xml"
    step bench 150 python3 -m bench --only end_to_end_warm,triangulation --no-sweep --budget-s 120 --out "$R" --tag core
    ;;
verify)  # one 10-minute call: the GPU tests, then issue 13's end-to-end workloads
    step pytest_gpu 170 python3 -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$R/pytest_gpu.xml"
    step bench 330 python3 -m bench --only end_to_end,end_to_end_warm,run_many,detect,images_to_meshes --no-sweep --budget-s 290 --out "$R" --tag verify
    ;;
final)  # a short call: the GPU tests against the installed wheel (issue 16), then the warm path (issue 13)
    step wheel_gpu 380 env OUT="$R" bash bench/wheel_gpu_check.sh  # a fresh machine: 266 s of tests (numba, Triton compiles)
    step bench 170 python3 -m bench --only end_to_end_warm --no-sweep --budget-s 140 --out "$R" --tag final
    ;;
check)  # one call: the GPU tests, fresh processes (profile; default against run.sequential_device=same), the warm path
    step pytest_gpu 230 python3 -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$R/pytest_gpu.xml"
    step fresh_profile 150 python3 -m bench.profile_fresh_run --device cuda --out "$R" --repeats 2 --variant run.sequential_device=same
    step bench 150 python3 -m bench --only end_to_end_warm --no-sweep --budget-s 130 --out "$R" --tag check
    ;;
last)  # one call: every GPU test with room for a fresh machine's compiles (numba's contact and mesh kernels,
        # Triton's), stacks dumped when one test takes over 120 s; then run-many
    step pytest_gpu 400 python3 -m pytest -q -p no:cacheprovider -m gpu -rfE --tb=short -o faulthandler_timeout=120 --durations=15 --junitxml="$R/pytest_gpu.xml"
    step bench 170 python3 -m bench --only run_many --no-sweep --budget-s 160 --out "$R" --tag last
    ;;
fitprof)  # one call: the fit stage alone under torch.profiler (GPU busy time, top kernels), then the two-loop L-BFGS direction, a short history, no CUDA graphs
    W=/tmp/h4d_fitprof
    step fit_profile 300 python3 -m bench.fit_stage --device cuda --repeats 2 --profile --work "$W" --json "$R/fit_profile.json"
    step fit_twoloop 120 python3 -m bench.fit_stage --device cuda --repeats 2 --work "$W" --set fit.lbfgs_direction=two_loop --json "$R/fit_twoloop.json"
    step fit_hist5 120 python3 -m bench.fit_stage --device cuda --repeats 2 --work "$W" --set fit.history_size=5 --json "$R/fit_hist5.json"
    step fit_nograph 120 python3 -m bench.fit_stage --device cuda --repeats 2 --work "$W" --set fit.cuda_graphs=false --json "$R/fit_nograph.json"
    ;;
probe)  # one call: the GPU tests, where a fresh process spends its time, then the image workloads
    step pytest_gpu 160 python3 -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$R/pytest_gpu.xml"
    step fresh_profile 120 python3 -m bench.profile_fresh_run --device cuda --out "$R"
    step images 270 python3 -m bench --only detect,images_to_meshes --no-sweep --budget-s 240 --out "$R" --tag images
    ;;
measure)  # issue 13's figures without the test suite (run the GPU tests in another call)
    step warm 190 python3 -m bench --only end_to_end_warm --no-sweep --budget-s 180 --out "$R" --tag measure-warm
    step run_many 110 python3 -m bench --only run_many --no-sweep --budget-s 100 --out "$R" --tag measure-many
    step fresh 100 python3 -m bench --only end_to_end --no-sweep --budget-s 90 --out "$R" --tag measure-fresh
    step fit_profile 120 python3 -m bench.fit_stage --device cuda --repeats 2 --profile --work /tmp/h4d_fitprof --json "$R/fit_profile.json"
    ;;
bench)
    step bench 560 python3 -m bench --budget-s 500 --out "$R"
    ;;
images)
    step images 560 python3 -m bench --only detect,images_to_meshes --no-sweep --budget-s 500 --out "$R" --tag images
    ;;
*) echo "unknown phase $phase" >&2; exit 2 ;;
esac
tail -n 3 "$R"/*.log
cat "$R/steps.txt"
tar -czf "$OUT/$phase.tar.gz" -C "$OUT" "$phase"
