"""Benchmarks of h4d_fast against its peers: one module per workload and one runner.

    python -m bench                 # everything available on this machine (GPU: < 8 min)
    python -m bench --out $OUT      # the same, results in $OUT (GPU machine: bench/gpu_command.txt)
    python -m bench --quick         # CPU CI-size run (a few minutes)
    python -m bench --full          # the whole scaling sweep on CPU too
    h4d bench [same options]        # the same runner through the h4d CLI

Workloads (each also runnable alone, ``python -m bench.<module> --help``):

* :mod:`bench.triangulation` -- RANSAC triangulation: aniposelib, plain numpy, plain torch,
  h4d_fast numba / triton / cupy;
* :mod:`bench.end_to_end` -- ``h4d run`` on the 600-frame synthetic capture (per stage);
* :mod:`bench.dedup` -- OKS duplicate removal: (xt|py)cocotools ``computeOks`` loop vs h4d_fast;
* :mod:`bench.collision` -- collision loss fwd+bwd: brute force (all vertex-face pairs), the
  grid-SDF torch reference, the fused kernels;
* :mod:`bench.fitting` -- SMPL fit: plain autograd through smplx vs h4d_fast's ``fit_sequence``.

Results go to ``bench/results/<date>-<device>.{json,md,png}``, or ``--out DIR`` (:mod:`bench.runner`).
The older ``bench/bench_*.py`` scripts are the kernel-only micro benchmarks of the first GPU run.
"""
