"""Shared fixtures: paths of the shipped specs, and torchvision's reference data (a copy in
``tests/data``: the tests read nothing outside the repository)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# The suite runs in parallel workers (pytest-xdist, `-n` in pyproject.toml), one per core. Each worker and
# the processes its tests start get one torch thread: OpenMP threads that outnumber the cores wait for
# each other in spinning barriers, and a training step ran 10x slower with two 2-thread processes on two
# cores. (Set before torch is imported; the conftest is read before any test module.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
CORPUS = Path(__file__).resolve().parent / "corpus"
GOLDEN = Path(__file__).resolve().parent / "golden"
DATA = Path(__file__).resolve().parent / "data"
ALL_SPECS = sorted(SPECS.glob("*.yaml"))
# the specs that tests over every shipped spec run in the quick tier (python3 -m pytest -m "not slow"):
# the paper's GoogLeNet, its small variant and a residual network; the whole suite runs them all
QUICK_SPECS = {"googlenet", "googlenet-small", "resnet18"}
# (vgg.yaml is by default configuration D: the network vgg16.yaml spells out, so these tests build it once, as
# vgg16; tests/test_classic_zoo.py covers vgg.yaml's columns)
# The specs the measuring tests (memory against torch's live tensors, the backend's and --optimize's outputs)
# run on: the networks archc began with, one of each kind of layer. The zoo's later families are measured
# through a small variant each (tests/test_zoo.py, MEASURED), which keeps the whole suite under 10 minutes.
MEASURED_SPECS = [p for p in ALL_SPECS if p.stem in {
    "googlenet", "googlenet-2class", "googlenet-small", "googlenet-torchvision", "googlenet-v2", "resnet18", "resnet",
    "vgg16", "alexnet", "densenet", "squeezenet", "mobilenet_v2", "mobilenet_v3", "mobilenet_v3_small"}]
TIERED_SPECS = [p if p.stem in QUICK_SPECS else pytest.param(p, marks=pytest.mark.slow, id=p.stem)
                for p in MEASURED_SPECS]
# torchvision model -> the shipped spec that claims its layout
TORCHVISION_SPECS = {"googlenet": "googlenet-torchvision.yaml", "resnet18": "resnet18.yaml", "vgg16": "vgg16.yaml"}


@pytest.fixture(scope="session")
def torchvision_reference() -> dict[str, dict]:
    """torchvision's keys, parameter counts and logits under the recipe weights, by model name
    (``tests/data/torchvision_recipe_logits.json``, recorded with torchvision 0.29.1)."""
    data = json.loads((DATA / "torchvision_recipe_logits.json").read_text())
    return {ref["model"].split("(")[0].rsplit(".", 1)[-1]: ref for ref in data["references"]}


def recipe_weights(keys: list, keep: dict | None = None) -> dict:
    """The reference weights, regenerated with torch alone: for the key at position i, a generator
    seeded 1000 + i (the recipe of tests/data/README.md). An integer buffer of ``keep`` (a built
    module's state_dict: Swin's relative_position_index) keeps its value, as the recipe keeps the builder's."""
    import torch

    out = {}
    for i, (key, shape) in enumerate(keys):
        g = torch.Generator().manual_seed(1000 + i)
        if keep is not None and key in keep and not keep[key].is_floating_point() \
                and not key.endswith("num_batches_tracked"):
            t = keep[key]
        elif key.endswith("num_batches_tracked"):
            t = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            t = torch.randn(shape, generator=g) * 0.1
        elif len(shape) >= 2:
            t = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            t = torch.rand(shape, generator=g) + 0.5
        else:
            t = torch.randn(shape, generator=g) * 0.1
        out[key] = t
    return out


def recipe_input(shape: tuple = (3, 224, 224)):
    """The reference's input: two images of the builder's native size, seeded 0."""
    import torch

    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))


def run_archc(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "archcompiler", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, **(env or {})}, timeout=300)


@contextlib.contextmanager
def no_hang(seconds: float = 60):
    """Fail, instead of hanging the suite, when the body runs longer than ``seconds``: a guard for
    inputs that could loop or explode (bombs, mutated specs), never a speed target (speed is measured
    in benchmarks/, where a busy machine cannot fail a build)."""
    import signal

    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s: it does not terminate")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def built():
    """``built(path)``: the module of a shipped spec, built once (seed 0) and shared by the tests that
    need some module of that spec, not a fresh one: shapes, counts, a training step. A test sets the
    mode it needs (``.eval()`` / ``.train()``); none relies on the weights' values."""
    cache: dict = {}

    def get(path):
        if path not in cache:
            import archcompiler

            cache[path] = archcompiler.build(path, seed=0)
        return cache[path]
    return get


README = (ROOT / "README.md").read_text()
# the README's own training run: the first `archc train` of its bash blocks (the digits 0 and 1)
README_TRAIN = next(line.strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
                    for line in block.splitlines() if line.startswith("archc train ") and "runs/digits" in line)
README_DIGITS = "python3 -m archcompiler.training.digits digits/"


# A busy machine (CI shares its cores) runs a command many times slower than an idle one: the limits below
# only catch a command that never ends
COMMAND_TIMEOUT = 1800


def run_readme_command(command: str, workdir: Path, timeout: int = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """One of the README's commands, as printed, in ``workdir`` (`archc` is `python -m archcompiler`)."""
    args = command.split()
    argv = [sys.executable, "-m", "archcompiler", *args[1:]] if args[0] == "archc" else [sys.executable, *args[1:]]
    if any("*" in a for a in args):         # let a shell expand globs, as it would for the user
        return subprocess.run(" ".join(shlex.quote(a) if "*" not in a else a for a in argv), shell=True, cwd=workdir,
                              capture_output=True, text=True, timeout=timeout)
    return subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=timeout)


OUTPUT_FLAGS = ("-o", "--output", "--out")


def command_outputs(command: str) -> list[str]:
    """What a command writes, by its arguments: ``-o X`` / ``--out X``, and the digits writer's folder."""
    args = shlex.split(command)
    outs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in OUTPUT_FLAGS]
    if "archcompiler.training.digits" in args:
        outs.append(args[args.index("archcompiler.training.digits") + 1])
    return [o.rstrip("/") for o in outs]


class CommandChain:
    """Commands that read what earlier ones write (the README's `build -o small.pt`, then `draw small.pt`),
    run in one folder so that every test prepares what it reads: :meth:`run` runs a command's producers
    first (the last earlier command that writes each path it reads, and theirs), each at most once, so a
    test passes alone, in any order, and whatever another test did."""

    def __init__(self, commands: list[str], folder: Path, runner, ran: dict | None = None):
        self.commands, self.folder, self.runner = list(commands), folder, runner
        self.ran: dict[str, subprocess.CompletedProcess] = dict(ran or {})

    def producers(self, command: str) -> list[str]:
        index = self.commands.index(command) if command in self.commands else len(self.commands)
        written = [(c, out) for c in self.commands[:index] for out in command_outputs(c)]
        mine = set(command_outputs(command))
        found = []
        for arg in shlex.split(command):
            arg = arg.rstrip("/")
            for producer, out in reversed(written):
                if arg not in mine and (arg == out or arg.startswith(out + "/")):
                    found.append(producer)
                    break
        return list(dict.fromkeys(found))

    def run(self, command: str) -> subprocess.CompletedProcess:
        if command not in self.ran:
            for producer in self.producers(command):
                done = self.run(producer)
                assert done.returncode == 0, (f"{command!r} reads what {producer!r} writes, which failed:\n"
                                              f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            self.ran[command] = self.runner(command, self.folder)
        return self.ran[command]


@pytest.fixture(scope="session")
def readme_workdir(tmp_path_factory) -> Path:
    """A copy of the files the README's commands read, so their outputs land outside the repository."""
    import shutil

    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "specs", work / "specs")
    shutil.copytree(ROOT / "examples", work / "examples")
    return work


@pytest.fixture(scope="session")
def readme_digits_run(readme_commands) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's training run (its digits, its command, as printed), run once for the whole
    suite: the README test runs it as a README command, the training tests check what it wrote."""
    assert README_DIGITS in README
    return readme_commands.folder, readme_commands.run(README_TRAIN)


README_COMMANDS = [part.strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
                   for line in block.splitlines() for part in line.split("&&")
                   if part.strip().startswith(("archc ", "python3 -m archcompiler"))]


@pytest.fixture(scope="session")
def readme_commands(readme_workdir) -> CommandChain:
    """The README's commands in its folder, each run once, after what it reads was written."""
    return CommandChain(README_COMMANDS, readme_workdir, run_readme_command)


def mangle_bytes(data: bytes, r) -> tuple[bytes, str]:
    """A seeded byte-level mutation of a file (``r``: a random.Random): bits flipped, cut short, bytes
    inserted, overwritten or repeated; and what was done, in words. The fuzzers of untrusted files use it."""
    b = bytearray(data)
    how = r.choice(["flip", "flip", "truncate", "insert", "overwrite", "repeat"])
    if how == "flip":
        for _ in range(r.randint(1, 8)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
    elif how == "truncate":
        b = b[: r.randrange(len(b))]
    elif how == "insert":
        at = r.randrange(len(b) + 1)
        b[at:at] = r.randbytes(r.randint(1, 16))
    elif how == "overwrite":
        at = r.randrange(len(b))
        b[at:at + 8] = r.choice([b"\xff" * 8, b"\x00" * 8, r.randbytes(8), b"\x80" * 8])
    else:
        at = r.randrange(len(b))
        b[at:at] = b[at:at + r.randint(1, 64)]
    return bytes(b), f"bytes {how}"


def meta_layout(spec, overrides=None) -> tuple[list, int]:
    """``([[key, shape], ...] in state_dict order, parameter count)`` of the module a spec builds, built
    on torch's meta device (no memory, no initialisation): what torchvision's reference data lists."""
    import torch

    import archcompiler

    with torch.device("meta"):
        model = archcompiler.build(spec, overrides=overrides, check_memory=False)
    return [[k, list(v.shape)] for k, v in model.state_dict().items()], sum(p.numel() for p in model.parameters())


def randomized(model):
    """Seeded weights, far from a fresh module's (a fresh norm's ones and zeros would hide a swapped or dropped
    tensor): every parameter N(0, 0.25), vectors around 1; running means 0.1 N(0, 1), running variances in
    [0.5, 1.5)."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1 if p.dim() == 1 else 0))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def trained_like(model):
    """Trained-like weights (seeded): every parameter times 1 + 0.1 N(0, 1) plus 1e-3 N(0, 1) (zero biases no
    longer zero, equal tensors no longer equal), running means 0.1 N(0, 1), running variances in [0.5, 1.5)
    (benchmarks/onnx_round_trip.py gives the same); the model in evaluation mode."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g)).add_(1e-3 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model.eval()


def assert_memory_measured(spec, infer_batch: int = 4, train_batch: int | None = 8, optimizer: str = "sgd") -> None:
    """archc's figures against torch's live tensors (archcompiler.measure.memory): the inference peak of a
    forward pass at ``infer_batch`` exactly; a training step at ``train_batch`` within 1% (None: not trained)."""
    import torch

    import archcompiler
    from archcompiler.measure.memory import measure_peak_activation_bytes, measure_training_peak_bytes

    spec = archcompiler.load_spec(spec)
    torch.manual_seed(0)
    model = archcompiler.build(spec, seed=0)
    assert archcompiler.analyze(spec, batch=infer_batch)["peak_activation_bytes"] == \
        measure_peak_activation_bytes(model, torch.randn(infer_batch, *spec.input))
    if train_batch is None:
        return
    predicted = archcompiler.analyze(spec, batch=train_batch, train_memory=optimizer)["train_memory"]["peak"]
    measured = measure_training_peak_bytes(model, torch.randn(train_batch, *spec.input),
                                           torch.randint(0, 2, (train_batch,)), optimizer)
    assert abs(predicted - measured) <= 0.01 * measured, (predicted, measured)


def assert_imports_back(model, text: str, batch: int = 2, atol: float = 1e-5) -> None:
    """The spec an import wrote builds the module's network: its state_dict keys load strictly, the parameter
    count is the module's, and the logits on a seeded batch are the module's (rtol 1e-5, ``atol``)."""
    import torch

    import archcompiler

    spec = archcompiler.load_spec(text)
    rebuilt = archcompiler.build(spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert archcompiler.analyze(spec)["total"]["params"] == sum(p.numel() for p in model.parameters())
    x = torch.randn(batch, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model.eval()(x), rtol=1e-5, atol=atol)


def assert_onnx_matches(spec, path: Path) -> None:
    """The spec's module exported to ONNX at ``path`` gives, under onnxruntime, the module's own output."""
    import numpy as np
    import onnxruntime
    import torch

    import archcompiler
    from archcompiler.backends.torch.export import export

    spec = archcompiler.load_spec(spec)
    model = archcompiler.build(spec, seed=0).eval()
    export(model, spec, "onnx", path)
    x = torch.randn(1, *spec.input)
    (y,) = onnxruntime.InferenceSession(str(path)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert np.abs(y - model(x).numpy()).max() < 1e-4


# fixtures whose folder a module's tests fill in order (later commands read what earlier ones wrote)
SHARED_FOLDERS = {"readme_workdir": "readme", "readme_digits_run": "readme", "readme_commands": "readme"}
# the modules that take longest start first, so that no worker is left with a long one at the end
LONGEST_FIRST = ["test_training", "test_zoo", "test_import", "test_properties", "test_memory", "test_readme",
                 "test_cli", "test_swin", "test_torch_backend", "test_optimize"]


@pytest.hookimpl(tryfirst=True)        # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Parallel workers (pytest-xdist's loadgroup) take whole modules, each in its own order, as a
    serial run would; the tests that share the README's working folder (the README's commands and the
    training tests that check what its training run wrote) run in one worker, in the README's order."""
    for item in items:
        group = next((SHARED_FOLDERS[f] for f in item.fixturenames if f in SHARED_FOLDERS), item.module.__name__)
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))      # stable: each module's order kept
