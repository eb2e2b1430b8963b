"""Package-level contracts: cheap import, config round trip."""

import subprocess
import sys

from h4d_fast.config import Config, describe, load_config, to_toml


def test_import_loads_no_kernel_backend():
    code = (
        "import sys, h4d_fast, h4d_fast.ops, h4d_fast.pipeline.driver, h4d_fast.cli, h4d_fast.synth;"
        "print([m for m in ('triton', 'cupy', 'numba') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_config_toml_round_trip(tmp_path):
    cfg = Config()
    cfg.triangulation.err_thr = 0.02
    cfg.filter.dedup_policy = "drop-both"
    p = tmp_path / "c.toml"
    p.write_text(to_toml(cfg))
    back = load_config(p)
    assert back.to_dict() == cfg.to_dict()
    assert load_config(None, ["refine.iters=7"]).refine.iters == 7


def test_paper_defaults():
    cfg = Config()
    assert cfg.filter.oks_thr == 0.7 and cfg.filter.min_kpts == 6 and cfg.filter.kpt_conf_thr == 0.2
    assert cfg.triangulation.conf_thr == 0.5 and cfg.triangulation.err_thr == 0.01 and cfg.triangulation.conf_thr_tracked == 0.2
    assert cfg.identity.window == 10
    assert (cfg.refine.w_limb, cfg.refine.w_symm, cfg.refine.w_temporal, cfg.refine.w_init) == (1.0, 1.0, 1.0, 1.0)
    text = describe(cfg)
    assert "[triangulation]" in text and "# " in text
