"""Training on real images: learning, exact resume, DDP against one process, bad input, and the
checkpoint's round trip through evaluate and predict (the README's commands and the help's examples
too). Data: scikit-learn's handwritten digits written as an ImageFolder of PNGs."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SPECS, run_archc

import archcompiler
from archcompiler import SpecError, TrainOptions
from archcompiler.training.digits import write_digits

SMALL = SPECS / "googlenet-small.yaml"
TWO = ["num_classes=2"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "digits"
    assert write_digits(folder) == 360
    return folder


@pytest.fixture(scope="module")
def few(tmp_path_factory, digits) -> Path:
    """64 images: 32 zeros and 32 ones (quick runs)."""
    folder = tmp_path_factory.mktemp("data") / "few"
    for digit in ("0", "1"):
        (folder / digit).mkdir(parents=True)
        for n in range(32):
            shutil.copy(digits / digit / f"{n}.png", folder / digit / f"{n}.png")
    return folder


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_googlenet_small_learns_the_digits_through_the_cli(readme_digits_run, tmp_path):
    """The README's training run (run once for the suite, by tests/conftest.readme_digits_run): it
    learns, logs, writes its run folder, and its checkpoint round-trips."""
    work, result = readme_digits_run
    run, digits = work / "runs" / "digits", work / "digits"
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _metrics(run)
    best = max(float(r["val_accuracy"]) for r in rows)
    assert best >= 0.9, rows
    assert "epoch 6/6" in result.stderr and "best: validation accuracy" in result.stdout   # log lines, summary
    assert {p.name for p in run.iterdir()} >= {"spec.yaml", "args.json", "metrics.csv", "curves.png", "last.pt",
                                                "best.pt"}
    assert (run / "curves.png").read_bytes().startswith(b"\x89PNG")
    # the checkpoint round-trips: load_model, draw, evaluate (with its picture), predict
    model = archcompiler.load_model(run / "best.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert run_archc("draw", str(run / "best.pt"), "-o", str(tmp_path / "best.svg")).returncode == 0
    report = archcompiler.evaluate(run / "best.pt", digits, plot=tmp_path / "confusion.png")
    assert report["accuracy"] >= 0.9 and report["classes"] == ["0", "1"] and sum(map(sum, report["confusion"])) == 360
    assert (tmp_path / "confusion.png").read_bytes().startswith(b"\x89PNG")
    out = run_archc("predict", str(run / "best.pt"), str(digits / "0" / "3.png"), str(digits / "1" / "5.png"),
                    "--format", "json")
    assert out.returncode == 0, out.stderr
    tops = [r["top"][0]["class"] for r in json.loads(out.stdout)]
    assert tops == ["0", "1"]


def _train(data, out, epochs, resume=False, extra=()):
    options = TrainOptions(epochs=epochs, batch_size=16, workers=0, out=out, resume=resume, progress=False)
    return archcompiler.train(SMALL, data, options, overrides=[*TWO, "width=0.125", *extra])


@pytest.mark.slow
def test_a_resumed_run_equals_an_uninterrupted_one(few, tmp_path):
    schedule = ["train.schedule=step", "train.step_every=1", "train.step_factor=0.5"]
    whole = _train(few, tmp_path / "whole", 3, extra=schedule)
    _train(few, tmp_path / "parts", 1, extra=schedule)
    resumed = _train(few, tmp_path / "parts", 3, resume=True, extra=schedule)
    keep = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [{k: r[k] for k in keep} for r in resumed.history] == [{k: r[k] for k in keep} for r in whole.history]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # extended beyond the original run: the schedule goes on (lr halves every epoch)
    longer = _train(few, tmp_path / "parts", 4, resume=True, extra=schedule)
    assert [r["lr"] for r in longer.history] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    assert len(_metrics(tmp_path / "parts")) == 4


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(few, tmp_path):
    """Two steps of a global batch of 8: torchrun's 2 processes take 4 images each. (Over many steps
    the two runs drift apart at the speed of rounding amplified by ReLUs near 0: one step agrees to
    3e-8, eight steps to 4e-4.)"""
    data = tmp_path / "sixteen"
    for digit in ("0", "1"):
        (data / digit).mkdir(parents=True)
        for n in range(8):
            shutil.copy(few / digit / f"{n}.png", data / digit / f"{n}.png")
    common = [str(SMALL), "--data", str(data), "--epochs", "1", "--batch-size", "8", "--workers", "0",
              "--val-split", "0", "-q", "--set", "num_classes=2", "--set", "width=0.125", "--set", "dropout=0",
              "--set", "aux_dropout=0", "--device", "cpu",
              # SGD: its update is linear in the gradient, so summation order stays at rounding level
              # (Adam divides by sqrt(v): a near-zero gradient that flips sign moves a weight by ~lr)
              "--set", "train.optimizer=sgd", "--set", "train.lr=0.05"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "archcompiler", "train", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29531", "-m", "archcompiler", "train", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["state_dict"]
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-6, worst
    rows = _metrics(tmp_path / "two")          # rank 0 alone wrote, once per epoch
    assert len(rows) == 1 and float(rows[0]["train_loss"]) == pytest.approx(float(_metrics(tmp_path / "one")[0]
                                                                                   ["train_loss"]), rel=1e-4)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.slow
def test_unreadable_images_are_skipped_and_counted(few, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(few, data)
    (data / "0" / "broken.jpg").write_bytes(b"not an image at all")
    whole = (data / "1" / "0.png").read_bytes()
    (data / "1" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    result = _train(data, tmp_path / "run", 1, extra=["train.seed=1"])
    assert result.skipped == 2            # one in training or validation each, counted wherever it fell
    from archcompiler.training import summary
    assert "unreadable images skipped: 2" in summary(result, "small")
    strict = run_archc("train", str(SMALL), "--data", str(data), "--set", "num_classes=2", "--set", "width=0.125",
                       "--epochs", "1", "--workers", "0", "--strict", "-q", "--val-split", "0",
                       "--out", str(tmp_path / "strict"))
    assert strict.returncode == 1 and "unreadable image" in strict.stderr


@pytest.mark.parametrize("case", ["one_class", "no_images", "class_count", "input_size", "missing"])
def test_bad_data_gives_a_clear_error(case, few, tmp_path):
    data, args = tmp_path / "data", []
    if case == "one_class":
        shutil.copytree(few / "0", data / "0")
    elif case == "no_images":
        (data / "a").mkdir(parents=True)
        (data / "b").mkdir()
        args = ["--set", "num_classes=2"]
    elif case == "input_size":
        data, args = few, ["--set", "num_classes=2", "--set", "data.crop=32"]
    elif case == "missing":
        data = tmp_path / "nowhere"
    else:
        data = few                              # 2 classes, the spec says 10
    result = run_archc("train", str(SMALL), "--data", str(data), "--epochs", "1", "--workers", "0", "-q",
                       "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 1, result.stderr
    expected = {"one_class": "training needs at least 2", "no_images": "no images to train on",
                "class_count": "--set num_classes=2", "input_size": "the network takes 64x64x3 images",
                "missing": "no such folder"}[case]
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists() or case == "no_images"


def test_the_recipe_comes_from_the_spec_and_flags_override_it(tmp_path):
    spec = archcompiler.load_spec(SPECS / "googlenet.yaml")
    assert (spec.train.optimizer, spec.train.momentum, spec.train.schedule, spec.train.step_every,
            spec.train.step_factor) == ("sgd", 0.9, "step", 8, 0.96)          # the paper: -4% every 8 epochs
    two = archcompiler.load_spec(SPECS / "googlenet-2class.yaml")
    assert (two.train.optimizer, two.train.lr, two.loss) == ("adam", 0.001, "binary_cross_entropy")
    assert [o.weight for o in two.outputs.values()] == [1.0, 0.3, 0.3]
    from archcompiler.training.recipe import lr_factor
    assert lr_factor(spec, 7) == 1.0 and lr_factor(spec, 8) == pytest.approx(0.96)
    assert lr_factor(spec, 16) == pytest.approx(0.96 ** 2)
    with pytest.raises(SpecError, match="train.optimizer|optimizer"):
        archcompiler.load_spec(SPECS / "googlenet.yaml", ["train.optimizer=adagrad"])


# ----------------------------------------------------------------------------- documentation

@pytest.mark.slow
def test_help_examples_of_train_evaluate_and_predict_run(few, tmp_path):
    """As printed, on a folder named digits/ (64 of the digits: the examples' commands, not their accuracy)."""
    from archcompiler.cli import EXAMPLES

    shutil.copytree(SPECS, tmp_path / "specs")
    shutil.copytree(few, tmp_path / "digits")
    for name in ("train", "evaluate", "predict"):
        for example in EXAMPLES[name]:
            cmd = example.replace("archc ", f"{sys.executable} -m archcompiler ", 1) + \
                (" --workers 0 -q" if name == "train" else "")
            result = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{example}\n{result.stderr[-2000:]}"
    assert len(_metrics(tmp_path / "runs" / "small")) == 3         # the resume example extended the run


def test_the_readme_shows_one_machine_and_two():
    readme = (ROOT / "README.md").read_text()
    assert "torchrun --nproc-per-node 2 -m archcompiler train" in readme
    assert "--nnodes 2" in readme


@pytest.mark.slow
def test_ctrl_c_keeps_a_resumable_state_and_says_how_to_resume(few, tmp_path):
    import signal

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "archcompiler", "train", str(SMALL), "--data", str(few), "--set", "num_classes=2",
           "--set", "width=0.125", "--epochs", "30", "--workers", "0", "--out", str(run)]
    # a suite started in the background of a non-interactive shell ignores SIGINT, and so would the child
    # (Python keeps an inherited SIG_IGN): the child gets Ctrl-C's default, as in a terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stderr:
        if line.startswith("epoch 1/30: loss"):       # the epoch's end (not a progress line within it)
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and f"continue with: archc train --out {run} --resume" in err
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] >= 1
    resumed = run_archc("train", str(SMALL), "--data", str(few), "--set", "num_classes=2", "--set", "width=0.125",
                        "--epochs", str(state["epoch"] + 1), "--workers", "0", "--out", str(run), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert len(_metrics(run)) == state["epoch"] + 1


@pytest.mark.slow
def test_amp_and_starting_weights(few, tmp_path):
    """--amp trains in bfloat16 on CPU (float16 on CUDA); --weights starts from a checkpoint."""
    first = _train(few, tmp_path / "first", 1)
    options = TrainOptions(epochs=1, batch_size=16, workers=0, amp=True, weights=tmp_path / "first" / "best.pt",
                           out=tmp_path / "amp", progress=False)
    result = archcompiler.train(SMALL, few, options, overrides=[*TWO, "width=0.125"])
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])
    assert first.history[0]["epoch"] == 1


@pytest.mark.slow
def test_a_small_mobilenet_v2_learns_the_digits(digits, tmp_path):
    """A zoo network by its name, shrunk by --set (64x64 images, width 0.35, two classes), trains on the
    digits with the recipe's loop: the table language's networks are trainable like GoogLeNet."""
    overrides = ["num_classes=2", "input=[3,64,64]", "width_mult=0.35", "dropout=0", "train.optimizer=adam",
                 "data.random_resized_crop=false"]
    options = TrainOptions(epochs=6, batch_size=32, lr=0.002, workers=0, seed=0, out=tmp_path / "run", progress=False)
    result = archcompiler.train("mobilenet_v2", digits, options, overrides=overrides)
    assert max(h["val_accuracy"] for h in result.history) >= 0.9, result.history


def test_what_a_run_meets_is_a_run_error_and_what_its_spec_says_a_spec_error(tmp_path):
    # an empty class folder, no CUDA device: the run's (RunError); a feature extractor: the spec's (SpecError)
    from archcompiler import RunError

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
    with pytest.raises(RunError, match="no images to train on"):
        archcompiler.train(SMALL, tmp_path / "data", TrainOptions(write=False, progress=False),
                           overrides={"num_classes": 2})
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="no CUDA device"):
            archcompiler.train(SMALL, tmp_path / "data", TrainOptions(device="cuda", write=False, progress=False),
                               overrides={"num_classes": 2})
    with pytest.raises(SpecError, match="feature extractor") as info:
        archcompiler.train(SMALL, tmp_path / "data", TrainOptions(write=False),
                           overrides={"num_classes": 2, "features": [-1]})
    assert not isinstance(info.value, RunError)
