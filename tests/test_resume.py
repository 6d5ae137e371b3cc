"""Resuming a run from its folder (issue 31): Ctrl-C in the middle of an epoch prints the command that
continues it (``archc train --out runs/NAME --resume``: args.json and spec.yaml say how the run began),
which reaches the metrics and weights of an uninterrupted run; a flag given again overrides its
recorded value and says so; speeds with two significant digits; progress lines in a redirected run.

The network is a tiny CNN with BatchNorm, dropout and random crops and flips (every random state a
resumed run must reproduce), on 30 + 30 of scikit-learn's digits in batches of 2: a run takes a few
seconds."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_archc

from archcompiler.cli import main
from archcompiler.training.console import PROGRESS_SECONDS, Progress, format_rate, progress_seconds
from archcompiler.training.digits import write_digits

TINY = """\
name: tiny_resume
input: [3, 16, 16]
params: {num_classes: 10}
data: {resize: 16, crop: 16, min_scale: 0.5}
train: {optimizer: adam, lr: 0.01, batch_size: 2}
layers:
  - {name: conv1, op: conv, out: 8, kernel: 3, padding: 1, norm: batch_norm, act: relu}
  - {name: pool1, op: max_pool, kernel: 2}
  - {name: conv2, op: conv, out: 16, kernel: 3, padding: 1, act: relu}
  - {name: gap, op: global_avg_pool}
  - {name: drop, op: dropout, p: 0.3}
  - {name: fc, op: linear, out: num_classes}
"""
# the command, on the tiny network: its default of 10 classes and 10 epochs are overridden
START = ["train", "tiny.yaml", "--data", "train/", "--val", "val/", "--set", "num_classes=2", "--epochs", "2",
         "--workers", "1"]
TIMING = ("images_per_s", "seconds")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with tiny.yaml, train/ (30 zeros, 30 ones) and val/ (8 of each): the runs' working directory."""
    work = tmp_path_factory.mktemp("resume")
    digits = work / "all"
    write_digits(digits)
    for digit in ("0", "1"):
        for split, numbers in (("train", range(30)), ("val", range(100, 108))):
            (work / split / digit).mkdir(parents=True)
            for n in numbers:
                shutil.copy(digits / digit / f"{n}.png", work / split / digit / f"{n}.png")
    shutil.rmtree(digits)
    (work / "tiny.yaml").write_text(TINY)
    return work


@pytest.fixture(scope="module")
def whole(work) -> str:
    """The uninterrupted run (runs/whole) with its output redirected to a file, as ``archc train ... >
    log 2>&1`` (a progress line every 0.01 s): the log."""
    log = work / "whole.log"
    with open(log, "w") as f:
        result = subprocess.run(_archc([*START, "--out", "runs/whole"]), cwd=work, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "ARCHC_PROGRESS_SECONDS": "0.01"}, timeout=300)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    return text


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _archc(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "archcompiler", *args]


# ----------------------------------------------------------------------------- Ctrl-C, then the printed command

@pytest.mark.slow
def test_ctrl_c_mid_epoch_then_the_printed_command_equals_an_uninterrupted_run(work, whole):
    env = {**os.environ, "ARCHC_PROGRESS_SECONDS": "0"}        # a progress line per batch
    # Ctrl-C in a terminal: SIGINT to the process group (archc and its data-loading worker), in epoch 2
    # (a suite started in the background ignores SIGINT, and so would the child: it gets the default back)
    proc = subprocess.Popen(_archc([*START, "--out", "runs/ctrlc"]), cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 2/2: batch 1/30"):
            os.killpg(proc.pid, signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    err = "".join(seen) + err
    assert proc.returncode == 130, err[-3000:]
    assert "epoch 2/2: loss" not in err and "Traceback" not in err, err[-3000:]       # stopped inside epoch 2
    assert "interrupted: runs/ctrlc/last.pt holds epoch 1 of 2; " \
           "continue with: archc train --out runs/ctrlc --resume\n" in err, err[-3000:]
    assert torch.load(work / "runs" / "ctrlc" / "last.pt", weights_only=True)["epoch"] == 1

    # the command exactly as printed
    printed = shlex.split(err.split("continue with: ")[1].splitlines()[0])
    assert printed[:2] == ["archc", "train"]
    resumed = subprocess.run(_archc(printed[1:]), cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 2/2: loss" in resumed.stderr and "epoch 1/2: loss" not in resumed.stderr
    assert "/10" not in resumed.stderr and "resuming" not in resumed.stderr      # nothing overridden
    args = json.loads((work / "runs" / "ctrlc" / "args.json").read_text())["arguments"]
    assert (args["val"], args["overrides"], args["epochs"], args["spec"]) == ("val/", ["num_classes=2"], 2, "tiny.yaml")

    # the same validation images, epochs, classes and random draws: the same metrics and weights
    rows = _metrics(work / "runs" / "ctrlc")
    assert rows == _metrics(work / "runs" / "whole") and len(rows) == 2
    assert all(float(r["val_accuracy"]) * 16 == round(float(r["val_accuracy"]) * 16) for r in rows)   # val/: 16
    a = torch.load(work / "runs" / "whole" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(work / "runs" / "ctrlc" / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- overrides

def test_a_worker_says_nothing_when_the_interrupted_process_drops_a_batch_handover(capsys):
    # Ctrl-C in the training process mid-handover of a batch's file descriptors reset the worker's
    # handover thread, whose sys.excepthook call printed a traceback (seen under load in CI); any other
    # failure is said
    from archcompiler.training.loop import _quiet_when_the_reader_is_gone

    namespace: dict = {}
    exec(compile("def serve(kind):\n    raise kind('Connection reset by peer')\n",
                 "/usr/lib/python3/multiprocessing/resource_sharer.py", "exec"), namespace)

    def elsewhere(kind):
        raise kind("elsewhere")

    for target, kind in [(namespace["serve"], ConnectionResetError), (namespace["serve"], ValueError),
                         (elsewhere, ConnectionResetError)]:
        try:
            target(kind)
        except Exception:
            _quiet_when_the_reader_is_gone(*sys.exc_info())
    err = capsys.readouterr().err
    assert err.count("Traceback") == 2 and "ValueError: Connection reset" in err and "elsewhere" in err
    assert "ConnectionResetError: Connection reset" not in err


@pytest.mark.slow
def test_a_flag_given_with_resume_overrides_the_recorded_one_and_says_so(work):
    first = run_archc(*START[:-4], "--epochs", "1", "--workers", "0", "--out", "runs/more", "-q", cwd=work)
    assert first.returncode == 0, first.stderr[-3000:]
    # the command the interrupted run used to print (without --val and --set) works too: they are recorded
    more = run_archc("train", "tiny.yaml", "--data", "train/", "--out", "runs/more", "--resume", "--epochs", "2",
                     "--lr", "0.02", "-q", cwd=work)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "archc: resuming runs/more with --epochs 2 (was 1), --lr 0.02 (was 0.01)\n" in more.stderr   # one line
    rows = _metrics(work / "runs" / "more")
    assert [r["lr"] for r in rows] == ["0.01", "0.02"] and all(r["val_accuracy"] for r in rows)
    args = json.loads((work / "runs" / "more" / "args.json").read_text())["arguments"]
    assert (args["epochs"], args["lr"], args["val"], args["overrides"]) == (2, 0.02, "val/", ["num_classes=2"])


def test_resume_without_a_run_folder_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["train", "--resume"])
    assert exit.value.code == 2 and "--resume needs the run folder: --out DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(["train", "some.yaml"])
    assert exit.value.code == 2 and "required: --data" in capsys.readouterr().err
    assert main(["train", "--out", "runs/none", "--resume"]) == 1
    assert "nothing to resume: no args.json in runs/none" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the console

@pytest.mark.parametrize("rate, shown", [(0.314, "0.31"), (0.0314, "0.031"), (3.14159, "3.1"), (1.0, "1.0"),
                                         (9.96, "10"), (12.3, "12"), (99.4, "99"), (99.6, "100"), (1234.4, "1234"),
                                         (0.0, "0")])
def test_images_per_second_have_two_significant_digits(rate, shown):
    assert format_rate(rate) == shown


def test_plain_progress_lines_off_a_terminal_at_the_interval_and_a_bar_on_one(monkeypatch):
    assert PROGRESS_SECONDS == 10
    monkeypatch.delenv("ARCHC_PROGRESS_SECONDS", raising=False)
    assert progress_seconds() == 10
    monkeypatch.setenv("ARCHC_PROGRESS_SECONDS", "0")              # read at each call
    assert progress_seconds() == 0
    log = io.StringIO()
    show = Progress(True, log)
    show.start(1, 3, 40)
    for _ in range(3):
        show.update(0.6931, 0.5, 0.314)
    show.end({"epoch": 1, "train_loss": 0.69, "train_accuracy": 0.5, "val_accuracy": None, "lr": 0.01,
              "images_per_s": 0.314, "seconds": 254.8}, 3)
    lines = log.getvalue().splitlines()
    assert lines[:3] == [f"epoch 1/3: batch {n}/40, loss 0.6931, acc 0.500, 0.31 img/s" for n in (1, 2, 3)]
    assert lines[3] == "epoch 1/3: loss 0.6900, acc 0.500, lr 0.01, 0.31 img/s, 254.8 s" and len(lines) == 4
    monkeypatch.setenv("ARCHC_PROGRESS_SECONDS", "3600")
    quiet = io.StringIO()
    show = Progress(True, quiet)
    show.start(1, 3, 40)
    show.update(0.6931, 0.5, 3.1)
    assert quiet.getvalue() == ""                                  # not before the interval

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    show = Progress(True, tty)
    show.start(1, 3, 40)
    show.update(0.6931, 0.5, 0.314)
    assert show.bar is not None and "batch 1/40" not in tty.getvalue() and "img_s=0.31" in tty.getvalue()
    show.bar.close()


@pytest.mark.slow
def test_a_redirected_run_shows_progress_before_the_first_epoch_ends(whole):
    end = whole.index("epoch 1/2: loss")
    assert "epoch 1/2: batch " in whole[:end] and "\r" not in whole and "it/s" not in whole, whole[-3000:]


@pytest.mark.parametrize("tamper", ["history", "epoch", "scheduler", "optimizer"])
def test_a_last_pt_changed_by_hand_is_refused_on_resume_never_an_internal_error(tamper, work, tmp_path):
    """last.pt is data: a history, epoch or state of another shape is refused with the file's name."""
    run = tmp_path / "run"
    first = run_archc(*START[:-4], "--epochs", "1", "--workers", "0", "--out", str(run), "-q", cwd=work)
    assert first.returncode == 0, first.stderr
    state = torch.load(run / "last.pt", weights_only=True)
    state[tamper] = {"history": "not a list", "epoch": -5, "scheduler": {"bogus": 1}, "optimizer": [1, 2]}[tamper]
    torch.save(state, run / "last.pt")
    done = run_archc("train", "--out", str(run), "--resume", "--epochs", "2", "--workers", "0", cwd=work)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "last.pt" in done.stderr and "Traceback" not in done.stderr and "internal error" not in done.stderr
