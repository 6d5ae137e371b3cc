"""The README stays true: every `archc` command in its bash blocks runs as shown, every transcript
(a text block that starts with `$ archc ...`) prints what the README shows, and its Python example runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import README_COMMANDS, ROOT, command_outputs

README = (ROOT / "README.md").read_text()
BASH = re.findall(r"```bash\n(.*?)```", README, re.S)
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)
TEXT = re.findall(r"```text\n(.*?)```", README, re.S)
TRANSCRIPTS = [block for block in TEXT if block.startswith("$ archc ")]
# transcripts whose numbers are this machine's (a latency prediction): they must run, and print the lines
# their output starts with, but the figures are a machine's own
MACHINE_DEPENDENT = ("--latency",)
COMMANDS = README_COMMANDS


@pytest.fixture(scope="module")
def workdir(readme_workdir):
    """The README's folder (shared with the training tests, which check what its training run wrote)."""
    return readme_workdir


def test_the_readme_shows_the_main_job_and_the_test_command():
    assert "./setup.sh && archc build specs/googlenet.yaml && archc flops specs/googlenet.yaml && " \
           "archc draw specs/googlenet.yaml" in README
    assert "./setup.sh && python3 -m pytest" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./setup.sh && python3 -m pytest" in ci


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if "digits" in c else c for c in COMMANDS])
def test_readme_command_runs(command, readme_commands):
    """Each command as printed, after the README's commands that write what it reads (each run once)."""
    done = readme_commands.run(command)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"


def test_every_command_that_reads_an_output_has_its_producer(readme_commands):
    """The chain sees the README's dependencies (else a test would read a file nobody wrote first)."""
    assert readme_commands.producers("archc diff resnet50-imported.yaml resnet50 --layers") == [
        "archc import archcompiler:build --arg spec_or_path=resnet50 -o resnet50-imported.yaml"]
    assert readme_commands.producers("archc draw googlenet_small.pt -o small.png") == [
        "archc build specs/googlenet-small.yaml -o googlenet_small.pt"]
    more = next(c for c in COMMANDS if c.startswith("archc predict runs/more-digits"))
    assert any("--out runs/more-digits" in p for p in readme_commands.producers(more))


def test_readme_python_example_runs(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    for block in PYTHON:
        exec(compile(block, "README.md", "exec"), {})


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Every expected line, in order; '...' stands for any number of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(_matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and _matches(expected[1:], actual[1:])


def test_every_transcript_is_checked():
    assert len(TRANSCRIPTS) >= 4 and any("validate examples/broken.yaml" in t for t in TRANSCRIPTS)


@pytest.mark.parametrize("transcript", TRANSCRIPTS, ids=lambda t: t.splitlines()[0][2:60])
def test_readme_transcript_prints_what_it_shows(transcript, workdir):
    command, *expected = transcript.rstrip("\n").splitlines()
    args = command.removeprefix("$ archc ").split()
    fresh = {**os.environ, "XDG_CACHE_HOME": str(workdir / "cache")}     # a fresh machine: no profile yet
    done = subprocess.run([sys.executable, "-m", "archcompiler", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=300, env=fresh)
    assert done.returncode in (0, 1) and "internal error" not in done.stderr, done.stderr
    actual = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
    if any(flag in args for flag in MACHINE_DEPENDENT):
        assert done.returncode == 0, done.stderr
        last = expected[-1].split(":")[0]
        assert any(line.startswith(last + ":") for line in actual), (command, actual[-5:])
        return
    assert _matches([line.rstrip() for line in expected], actual), (
        f"{command} prints, today:\n" + "\n".join(actual))


def test_what_the_readmes_commands_write_is_ignored_by_git(readme_commands, tmp_path):
    """Following the README in a clone leaves nothing untracked: everything its commands wrote (the
    digits, the run folders, the drawings, the built models) is in .gitignore. The commands of the quick
    tier run here if no other test ran them (each runs once); the training runs' outputs are named by their
    arguments. git reads the repository's .gitignore in a scratch repository, so the check runs from any
    checkout, a clone or not."""
    for command in COMMANDS:
        if "digits" not in command:
            assert readme_commands.run(command).returncode == 0, command
    written = {p.name + ("/" if p.is_dir() else "") for p in readme_commands.folder.iterdir()
               if p.name not in ("specs", "examples", "cache")}
    written |= {out.split("/")[0] + "/" for c in COMMANDS if "digits" in c for out in command_outputs(c)}
    written = sorted(written)
    assert written, "the README's commands wrote nothing here"
    scratch = tmp_path / "repo"
    scratch.mkdir()
    subprocess.run(["git", "init", "-q", str(scratch)], check=True, capture_output=True)
    shutil.copy(ROOT / ".gitignore", scratch / ".gitignore")
    check = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-v", "-n"], cwd=scratch, text=True,
                           input="\n".join(written) + "\n", capture_output=True)
    unignored = [line.split("\t")[-1] for line in check.stdout.splitlines() if line.startswith("::")]
    assert not unignored, f"add to .gitignore: {unignored}"


def test_the_op_table_is_the_one_the_op_modules_make():
    """The README's op table is `archc ops --format markdown`: made from the op models' fields and docs."""
    from archcompiler.ops import markdown

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- the op table, made from the op modules: archc ops --format markdown -->\n")
    end = readme.index("<!-- end of the op table -->")
    table = readme[start:end].split("\n", 1)[1]
    assert table == markdown(), "run: archc ops --format markdown, and paste it between the README's markers"
