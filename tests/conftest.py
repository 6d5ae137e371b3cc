"""Shared fixtures: paths of the shipped specs and of the team's reference data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
CORPUS = Path(__file__).resolve().parent / "corpus"
GOLDEN = Path(__file__).resolve().parent / "golden"
REFERENCE = Path(os.environ.get("ARCHC_REFERENCE", ROOT.parent / "shared" / "reference"))
ALL_SPECS = sorted(SPECS.glob("*.yaml"))


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "torchvision_googlenet_state_dict.json").is_file():
        pytest.fail(f"reference data not found in {REFERENCE} (set ARCHC_REFERENCE to its folder)")
    return REFERENCE


def run_archc(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "archcompiler", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=300)
