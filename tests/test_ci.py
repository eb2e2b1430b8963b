"""The README's test command and .ci/run agree: the same install line, and the CI's test tiers
together run what the README's single pytest command runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README, CI = ROOT / "README.md", ROOT / ".ci" / "run"

pytestmark = pytest.mark.skipif(not (README.is_file() and CI.is_file()), reason="not a checkout (README.md / .ci/run absent)")


def _readme_command() -> tuple[str, str]:
    m = re.search(r"^(pip install [^\n]*?) && (python -m pytest[^\n]*)$", README.read_text(), re.MULTILINE)
    assert m, "README.md has no `pip install ... && python -m pytest ...` line"
    return m.group(1).strip(), m.group(2).strip()


def _ci_lines() -> list[str]:
    return [ln.strip() for ln in CI.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_install_line_is_the_readmes():
    install, _ = _readme_command()
    assert install in _ci_lines()


def test_ci_test_tiers_cover_the_readme_command():
    _, readme_pytest = _readme_command()
    tiers = [shlex.split(ln) for ln in _ci_lines() if ln.startswith("python -m pytest")]
    base = shlex.split(readme_pytest)
    assert base[:3] == ["python", "-m", "pytest"] and "-m" not in base[3:] and "-k" not in base[3:]  # the README runs everything ...
    # ... which the CI runs as two tiers of the same command that together select every test
    assert sorted(t[len(base):] for t in tiers) == [["-m", "not slow"], ["-m", "slow"]]
    assert all(t[: len(base)] == base for t in tiers)


def test_ci_tier_markers_are_registered():
    text = (ROOT / "pyproject.toml").read_text()
    markers = re.search(r"markers = \[(.*?)\]", text, re.DOTALL)
    assert markers and '"slow:' in markers.group(1) and '"gpu:' in markers.group(1)
