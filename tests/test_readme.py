"""The README stays true: every `archc` command in its bash blocks runs as shown, and its Python
example runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()
BASH = re.findall(r"```bash\n(.*?)```", README, re.S)
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)
COMMANDS = [part.strip() for block in BASH for line in block.splitlines() for part in line.split("&&")
            if part.strip().startswith(("archc ", "python3 -m archcompiler"))]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the files the README's commands read, so their outputs land outside the repo."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "specs", work / "specs")
    return work


def test_the_readme_shows_the_main_job_and_the_test_command():
    assert "./setup.sh && archc build specs/googlenet.yaml && archc flops specs/googlenet.yaml && " \
           "archc draw specs/googlenet.yaml" in README
    assert "./setup.sh && python3 -m pytest" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./setup.sh && python3 -m pytest" in ci


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, workdir):
    """In the README's order: later commands use what earlier ones wrote (digits/, runs/)."""
    args = command.split()[1:] if command.startswith("archc ") else command.split()[3:]
    if any("*" in a for a in args):       # let a shell expand globs, as it would for the user
        done = subprocess.run(f"{sys.executable} -m archcompiler {' '.join(args)}", shell=True, cwd=workdir,
                              capture_output=True, text=True, timeout=300)
    else:
        module = "archcompiler" if command.startswith("archc ") else command.split()[2]
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=workdir, capture_output=True,
                              text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def test_readme_python_example_runs(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    for block in PYTHON:
        exec(compile(block, "README.md", "exec"), {})
