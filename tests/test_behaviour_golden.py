"""Behaviour is pinned: for every shipped spec, what `flops --format json`, `draw --format dot`,
`build --emit python` and `check` print is byte-identical to the golden files recorded before the
op table and the torch backend were reorganised.

The golden files are updated on purpose with:
    ARCHC_UPDATE_GOLDEN=1 python -m pytest tests/test_behaviour_golden.py
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from conftest import ALL_SPECS, GOLDEN

from archcompiler.cli import main

BEHAVIOUR = GOLDEN / "behaviour"
COMMANDS = {
    "flops.json": ["flops", "{spec}", "--format", "json"],
    "dot": ["draw", "{spec}", "--format", "dot", "-o", "-"],
    "check.txt": ["check", "{spec}"],
    "py.golden": ["build", "{spec}", "--emit", "python", "-q", "-o", "{out}"],
}


def _run(argv: list[str]) -> str:
    # a real text stream over bytes: `draw -o -` writes bytes to sys.stdout.buffer
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    out.flush()
    text = out.buffer.getvalue().decode("utf-8")
    assert code in (0, 1), f"{argv}: exit {code}\n{err.getvalue()}"      # never an internal error
    return f"exit {code}\n{text}"


@pytest.mark.parametrize("what", list(COMMANDS))
@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_output_unchanged(spec: Path, what: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(spec.parent.parent)           # the relative spec path appears in messages
    rel = str(spec.relative_to(spec.parent.parent))
    out = tmp_path / "model.py"
    text = _run([a.format(spec=rel, out=out) for a in COMMANDS[what]])
    if what == "py.golden":   # the file, not the message naming its temporary path
        text = out.read_text()
    golden = BEHAVIOUR / f"{spec.stem}.{what}"
    if os.environ.get("ARCHC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"output changed; if on purpose: ARCHC_UPDATE_GOLDEN=1 pytest {__file__}"
