"""``archc train``: the spec's recipe on a folder of images, one process or many (torchrun).

A run folder holds everything about the run: ``spec.yaml`` (resolved) and ``args.json`` (its
arguments: ``--resume`` takes them back, see :func:`resume_arguments`);
``metrics.csv`` (one row per epoch); ``last.pt`` (resumable: model, optimizer, schedule, epoch,
random states) and ``best.pt`` (best validation accuracy), both loadable by
``archcompiler.load_model`` and ``archc draw``; ``last.safetensors`` and ``best.safetensors`` (the
same weights, no pickle, the spec, class names and preprocessing in the metadata); ``curves.png``,
redrawn every epoch; and with ``--tensorboard``, TensorBoard event files in ``tensorboard/``.

Fine-tuning: ``--weights`` starts from a checkpoint; a classifier layer of another class count
starts afresh (see :mod:`archcompiler.backends.torch.weights`), ``--freeze LAYER`` keeps the layers
up to LAYER as they are, ``--patience N`` stops early.

Launched by ``torchrun --nproc-per-node N -m archcompiler train ...`` it trains with
DistributedDataParallel (gloo on CPU, nccl on GPU): each process takes ``batch_size / N`` images of
every global batch, so the result equals one process with the same global batch (for networks
without BatchNorm, whose statistics are per process, and with the same dropout draws); only rank 0
writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ArchcError, Location, SpecError, error, printable
from ..io import atomic_path, write_text
from ..spec import Spec, load_spec, parse_override
from ..spec.source import plain
from ..util import progress_seconds as util_progress_seconds
from ..version import __version__
from .data import ImageFolder, Preprocess, collate, refuse_feature_extractor, scan, split

METRICS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s", "seconds",
           "skipped"]


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: list[dict[str, Any]]
    run_dir: Path | None
    classes: list[str]
    skipped: int = 0                  # unreadable image files (each counted once, however often read)
    interrupted: bool = False
    best: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0                   # the epochs asked for
    stopped: dict[str, Any] | None = None    # early stopping: {"epoch", "patience"}
    new_heads: list[str] = field(default_factory=list)   # classifier layers started afresh, one line each
    frozen: str | None = None         # --freeze LAYER
    spared: list[str] = field(default_factory=list)      # new heads inside the frozen part, which train
    trainable: int = 0                # parameters that train
    parameters: int = 0               # all parameters


# ----------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _world(device: torch.device) -> World:
    """One process, or the torchrun group this process belongs to (joined here)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SpecError([error("--device cuda, but torch sees no CUDA device", "--device",
                               hint="use --device cpu (or auto)")])
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


# ----------------------------------------------------------------------------- recipe

def _optimizer(spec: Spec, params: Any) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov and t.momentum > 0,
                               weight_decay=t.weight_decay)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(spec: Spec, epoch: int) -> float:
    """The schedule: the learning rate of ``epoch`` (0-based) over the base rate."""
    t = spec.train
    if t.schedule == "step":
        return t.step_factor ** (epoch // t.step_every)
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch, t.epochs) / t.epochs))
    return 1.0


def _main_units(spec: Spec) -> int:
    from ..passes import annotated_graph

    g = annotated_graph(spec)
    main = next(o for o in g.graph["outputs"].values() if not o["training_only"])
    return g.nodes[main["node"]]["shape"][0]


def _check_classes(spec: Spec, classes: list[str], where: str) -> None:
    if len(classes) < 2:
        raise SpecError([error(f"{where} has {len(classes)} class folder(s); training needs at least 2",
                               "--data", Location(where), hint="one sub-folder per class: train/cats, train/dogs")])
    units = _main_units(spec)
    if units != len(classes) and not (units == 1 and len(classes) == 2):
        hint = f"--set num_classes={len(classes)}" if "num_classes" in spec.params else \
            f"give the spec's last layer {len(classes)} outputs"
        raise SpecError([error(f"the data has {len(classes)} classes ({', '.join(classes[:6])}"
                               f"{', ...' if len(classes) > 6 else ''}) but the spec's main output has {units} units",
                               "--data", Location(where), hint=hint)])


# ----------------------------------------------------------------------------- progress

PROGRESS_SECONDS = 10.0     # the longest wait between progress lines when the output is not a terminal


def progress_seconds() -> float:
    """Seconds between two progress lines of an epoch when the output is not a terminal:
    ``PROGRESS_SECONDS`` (10), or the environment's ``ARCHC_PROGRESS_SECONDS`` (util.progress_seconds)."""
    return util_progress_seconds(PROGRESS_SECONDS)


def format_rate(per_second: float) -> str:
    """A speed for people: two significant digits below 100 (``0.31``, ``3.1``, ``12``), whole numbers
    from there (``1234``)."""
    if not math.isfinite(per_second):
        return str(per_second)
    if per_second <= 0:
        return "0"
    if per_second >= 99.5:
        return f"{per_second:.0f}"
    rounded = float(f"{per_second:.2g}")
    return f"{rounded:.{max(0, 1 - math.floor(math.log10(rounded)))}f}"


class Progress:
    """A bar per epoch on a terminal (tqdm). Elsewhere (a log file, CI) plain lines: during an epoch
    one at least every :func:`progress_seconds` (``epoch 1/3: batch 12/40, loss 0.6931, acc 0.512,
    3.1 img/s``), and one at its end."""

    def __init__(self, enabled: bool, stream: Any = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar: Any = None
        self.epoch = self.epochs = self.batches = self.done = 0
        self.last = 0.0
        self.every = PROGRESS_SECONDS

    def start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epoch, self.epochs, self.batches, self.done = epoch, epochs, batches, 0
        self.last = time.perf_counter()
        self.every = progress_seconds()
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=True, file=self.stream,
                            dynamic_ncols=True)

    def update(self, loss: float, accuracy: float, images_per_s: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", img_s=format_rate(images_per_s))
            self.bar.update(1)
        elif self.enabled and self.done < self.batches:        # the epoch's own line follows its last batch
            now = time.perf_counter()
            if now - self.last >= self.every:
                self.last = now
                print(f"epoch {self.epoch}/{self.epochs}: batch {self.done}/{self.batches}, loss {loss:.4f}, "
                      f"acc {accuracy:.3f}, {format_rate(images_per_s)} img/s", file=self.stream, flush=True)

    def end(self, row: dict[str, Any], epochs: int) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            val = f", val acc {row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else ""
            print(f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, acc {row['train_accuracy']:.3f}"
                  f"{val}, lr {row['lr']:.3g}, {format_rate(row['images_per_s'])} img/s, {row['seconds']:.1f} s",
                  file=self.stream, flush=True)


# ----------------------------------------------------------------------------- run folder

def _new_run_dir(spec: Spec) -> Path:
    base = Path("runs")
    n = 1
    while (base / f"{spec.name}-{n}").exists():
        n += 1
    return base / f"{spec.name}-{n}"


def _latest_run_dir(spec: Spec) -> Path | None:
    runs = sorted(Path("runs").glob(f"{spec.name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS})
    write_text(path, buf.getvalue())


def plot_curves(path: Path, history: list[dict[str, Any]], title: str) -> None:
    """Loss and accuracy per epoch, as a picture (redrawn after every epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if any(r.get("val_loss") is not None for r in history):
        ax1.plot(epochs, [r.get("val_loss") for r in history], "s-", label="validation (main output only)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (weighted sum of the spec's losses)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    if any(r.get("val_accuracy") is not None for r in history):
        ax2.plot(epochs, [r.get("val_accuracy") for r in history], "s-", label="validation")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (main output)")
    ax2.set_ylim(0, 1.02)
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- the loop

def _loader(dataset: ImageFolder, batch: int, world: World, shuffle: bool, workers: int, seed: int) -> Any:
    # one ordering for one process or many: a permutation seeded by (seed, epoch), of which each
    # process takes every world.size-th image (so the global batches are the same)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world.size, rank=world.rank,
                                                  shuffle=shuffle, seed=seed, drop_last=False)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                                       collate_fn=collate, persistent_workers=False, pin_memory=False,
                                       worker_init_fn=_worker_ignores_ctrl_c if workers else None)


def _worker_ignores_ctrl_c(worker_id: int) -> None:
    """A data-loading worker leaves Ctrl-C to the training process, which stops and ends the workers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _quiet_when_the_reader_is_gone


def _quiet_when_the_reader_is_gone(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    """The thread through which a worker hands a batch's file descriptors to the training process
    (multiprocessing's resource sharer, which reports its failures through ``sys.excepthook``) fails with
    a connection reset when that process is interrupted mid-handover: nothing for the user (a traceback
    after Ctrl-C, seen under load); any other failure is said as Python says it."""
    frames, handover = tb, False
    for _ in range(64):                 # bounded: the frames of one failed call
        if frames is None:
            break
        handover = handover or frames.tb_frame.f_code.co_filename.endswith("resource_sharer.py")
        frames = frames.tb_next
    if handover and issubclass(exc_type, (ConnectionError, EOFError)):
        return
    sys.__excepthook__(exc_type, exc, tb)


def _sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def evaluate_loader(model: torch.nn.Module, loader: Any, device: torch.device, n_classes: int,
                    amp: bool = False) -> dict[str, Any]:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted) of the main output."""
    model.eval()
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    loss_sum, count, skipped, bad_files = 0.0, 0, 0, []
    with torch.no_grad():
        for x, y, bad in loader:
            skipped += len(bad)
            bad_files += bad
            if len(y) == 0:
                continue
            x, y = x.to(device), y.to(device)
            with _autocast(device, amp):
                logits = model(x)
            loss_sum += float(model.loss(logits, y)) * len(y) if hasattr(model, "loss") else 0.0
            pred = _predicted(logits, n_classes)
            for t, p in zip(y.tolist(), pred.tolist()):
                confusion[t, p] += 1
            count += len(y)
    return {"loss": loss_sum / count if count else None, "accuracy": confusion.diag().sum().item() / count
            if count else None, "confusion": confusion, "count": count, "skipped": skipped, "bad": bad_files}


def _predicted(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    if logits.shape[1] == 1 and n_classes == 2:          # one unit: the probability of class 1
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


def _autocast(device: torch.device, amp: bool) -> Any:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


# ----------------------------------------------------------------------------- set-up

def _distributed(spec: Spec, device: str) -> tuple[torch.device, World]:
    """The device and the process group (joined when launched by torchrun)."""
    dev = _device(device)
    world = _world(dev)
    if spec.train.batch_size % world.size:
        raise SpecError([error(f"the batch of {spec.train.batch_size} does not split over {world.size} processes",
                               "--batch-size", hint=f"use a multiple of {world.size}")])
    return dev, world


@dataclass
class Data:
    classes: list[str]
    train_samples: list[tuple[Path, int]]
    val_samples: list[tuple[Path, int]]
    train_set: ImageFolder
    val_set: ImageFolder
    loader: Any
    val_loader: Any
    workers: int


def _data(spec: Spec, data: str | Path, val: str | Path | None, val_split: float | None, world: World,
          workers: int | None) -> Data:
    """The class folders, the training and validation split, and their loaders."""
    t = spec.train
    pre = Preprocess.from_spec(spec)
    classes, samples = scan(data)
    _check_classes(spec, classes, str(data))
    if val is not None:
        val_classes, val_samples = scan(val)
        if val_classes != classes:
            raise SpecError([error(f"the validation folder's classes ({', '.join(val_classes)}) differ from the "
                                   f"training folder's ({', '.join(classes)})", "--val", Location(str(val)))])
        train_samples = samples
    elif val_split:
        train_samples, val_samples = split(samples, val_split, t.seed)
    else:
        train_samples, val_samples = samples, []
    if not train_samples:
        raise SpecError([error(f"no images to train on in {data}", "--data", Location(str(data)),
                               hint=f"images end in {', '.join(sorted(['.jpg', '.png', '.bmp', '.webp']))} ...")])
    if val is not None and not val_samples:
        raise SpecError([error(f"no images in the validation folder {val}", "--val", Location(str(val)))])
    train_set = ImageFolder(train_samples, pre, train=True, seed=t.seed)
    val_set = ImageFolder(val_samples, pre, train=False, seed=t.seed)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = _loader(train_set, t.batch_size // world.size, world, True, workers, t.seed)
    val_loader = _loader(val_set, t.batch_size, World(), False, workers, t.seed) if val_samples else None
    return Data(classes, train_samples, val_samples, train_set, val_set, loader, val_loader, workers)


def _tensorboard_writer(write: bool) -> Any:
    """TensorBoard's writer class, refused before anything is written when it cannot be used."""
    if not write:
        raise SpecError([error("--tensorboard writes into the run folder, and this run writes none", "--tensorboard")])
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpecError([error("--tensorboard needs the tensorboard package, which is not installed", "--tensorboard",
                               hint="pip install tensorboard (or pip install 'archcompiler[tensorboard]')")]) from None
    return SummaryWriter


# ----------------------------------------------------------------------------- run folder

# train()'s arguments that args.json records under "arguments" (as given: None is a default), and the
# flag of each: --resume takes them back, a flag given again overriding its recorded value
ARGUMENTS = {"spec": "SPEC", "data": "--data", "val": "--val", "val_split": "--val-split", "overrides": "--set",
             "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "device": "--device",
             "workers": "--workers", "amp": "--amp", "weights": "--weights", "pretrained": "--pretrained",
             "freeze": "--freeze", "patience": "--patience", "tensorboard": "--tensorboard", "strict": "--strict"}
_PATHS = ("spec", "data", "val", "weights")
_RECIPE = ("epochs", "batch_size", "lr", "seed")       # their value in effect is args.json's "train"


def _read_args(run_dir: Path) -> dict[str, Any]:
    """The run folder's args.json ({} when it has none, or an unreadable one)."""
    try:
        args = json.loads((Path(run_dir) / "args.json").read_text())
    except (OSError, ValueError):
        return {}
    return args if isinstance(args, dict) else {}


def _same_path(a: Any, b: Any) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, TypeError):
        return False


def _recorded_arguments(args: dict[str, Any]) -> dict[str, Any]:
    """args.json's arguments; a run folder written before they were recorded gives what it has (its
    --set then holds the flags' train.FIELD=VALUE too)."""
    if isinstance(args.get("arguments"), dict):
        rec = {k: args["arguments"].get(k) for k in ARGUMENTS}
    else:
        device = args.get("device")
        rec = {k: args.get(k) for k in ("spec", "data", "val", "val_split", "overrides", "workers", "amp", "weights",
                                         "freeze", "patience")}
        rec["device"] = str(device).split(":")[0] if device else None
    cwd = args.get("cwd")
    if cwd and not _same_path(cwd, Path.cwd()):       # a relative path was relative to where the run began
        for key in _PATHS:
            if isinstance(rec.get(key), str) and not Path(rec[key]).is_absolute() and (Path(cwd) / rec[key]).exists():
                rec[key] = str(Path(cwd) / rec[key])
    rec["overrides"] = list(rec.get("overrides") or [])
    return rec


def _shown(key: str, value: Any) -> str:
    if key == "overrides":
        return value
    if isinstance(value, bool) or value is None:
        return {True: "on", False: "off", None: "none"}[value]
    return str(value)


def resume_arguments(out: str | Path | None, given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The arguments of :func:`train` that resume a run: those its folder's args.json records, each
    one given again (not None in ``given``; ``overrides``: a list of ``PATH=VALUE``) overriding its
    recorded value. Returns them, with ``out`` set to the run folder, and the overrides in words,
    one each: ``--epochs 5 (was 3)``, ``--set train.lr=0.01 (was train.lr=0.001)``.

    ``out`` is the run folder; without it, the latest ``runs/NAME-N`` of ``given["spec"]``. Without
    a SPEC given, the spec is the run folder's ``spec.yaml`` (the resolved spec the run trained)."""
    given = {k: v for k, v in given.items() if v is not None and v != []}
    if out is None:
        if "spec" not in given:
            raise SpecError([error("--resume needs the run folder: --out DIR (or SPEC, for its latest run)", "--resume",
                                   hint="archc train --out runs/NAME --resume")])
        run_dir = _latest_run_dir(load_spec(given["spec"], given.get("overrides")))
        if run_dir is None:
            raise SpecError([error("nothing to resume: no runs/ folder of this spec here", "--resume",
                                   hint="give the run folder with --out runs/NAME")])
    else:
        run_dir = Path(out)
    args = _read_args(run_dir)
    if not args:
        if "spec" in given and "data" in given:       # a folder without args.json: what the command line says
            return {**given, "out": str(run_dir)}, []
        raise SpecError([error(f"nothing to resume: no args.json in {run_dir}", "--resume", Location(str(run_dir)),
                               hint="give the folder of an archc train run with --out (or SPEC and --data)")])
    rec = _recorded_arguments(args)
    recipe = args.get("train") if isinstance(args.get("train"), dict) else {}
    merged, changes = dict(rec), []
    for key, value in given.items():
        if key == "overrides":
            paths = {o.partition("=")[0].strip(): o for o in value}
            before = {o.partition("=")[0].strip(): o for o in rec["overrides"]}
            for path, o in paths.items():
                section, _, name = path.partition(".")          # train.lr: the recipe's value in effect
                held = {"train": recipe, "data": args.get("data_options")}.get(section)
                if isinstance(held, dict) and name in held:
                    if parse_override(o)[1] != held[name]:
                        changes.append(f"--set {o} (was {path}={json.dumps(held[name])})")
                elif path not in before or before[path].partition("=")[2].strip() != o.partition("=")[2].strip():
                    changes.append(f"--set {o} (was {before.get(path, 'not set')})")
            merged["overrides"] = [o for o in rec["overrides"] if o.partition("=")[0].strip() not in paths] + \
                list(paths.values())
            continue
        was = recipe.get(key, rec.get(key)) if key in _RECIPE else rec.get(key)
        if key in _PATHS and was is not None:
            same = _same_path(value, was) or key == "spec" and _same_path(value, run_dir / "spec.yaml")
        else:
            same = (value or None) == (was or None) if key == "val_split" else value == was
        if not same:
            shown = f"--val {rec['val']}" if key == "val_split" and rec.get("val") else _shown(key, was)
            changes.append(f"{ARGUMENTS[key]} (was {shown})" if isinstance(value, bool) else
                           f"{ARGUMENTS[key]} {_shown(key, value)} (was {shown})")
        merged[key] = value
    if "val_split" in given and "val" not in given and rec.get("val"):
        merged["val"] = None                        # --val-split given again replaces the recorded --val
    if merged.get("val_split") == 0:
        merged["val_split"] = None
    if "spec" not in given and (run_dir / "spec.yaml").is_file():
        merged["spec"] = str(run_dir / "spec.yaml")
    if not merged.get("spec") or not merged.get("data"):
        missing = " and ".join(f for k, f in (("spec", "SPEC"), ("data", "--data")) if not merged.get(k))
        raise SpecError([error(f"{run_dir / 'args.json'} does not say the run's {missing}", "--resume",
                               Location(str(run_dir)), hint=f"give {missing} on the command line")])
    merged["out"] = str(run_dir)
    return merged, changes


class RunFolder:
    """Where a run keeps its state: the resolved spec, its arguments, metrics, curves and checkpoints
    (``.pt``: resumable; ``.safetensors``: the weights alone). Only rank 0 writes; ``dir`` is None
    when nothing is written."""

    def __init__(self, spec: Spec, model: torch.nn.Module, optimizer: Any, scheduler: Any, classes: list[str],
                 pre: Preprocess, dir: Path | None):
        self.spec, self.model, self.optimizer, self.scheduler = spec, model, optimizer, scheduler
        self.classes, self.pre, self.dir = classes, pre, dir
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.start = 0
        self.saved = 0                  # the epoch last.pt holds
        self.source = str(spec.file)    # the spec as args.json records it (train() says how it was given)

    @classmethod
    def open(cls, spec: Spec, model: torch.nn.Module, optimizer: Any, scheduler: Any, classes: list[str],
             pre: Preprocess, out: str | Path | None, resume: bool, write: bool, world: World) -> RunFolder:
        if resume:
            run_dir = Path(out) if out else _latest_run_dir(spec)
            if run_dir is None or not (run_dir / "last.pt").is_file():
                raise SpecError([error(f"nothing to resume: no last.pt in {run_dir or 'runs/'}", "--resume",
                                       hint="give the run folder with --out runs/NAME")])
            folder = cls(spec, model, optimizer, scheduler, classes, pre, run_dir if write and world.main else None)
            folder._resume(run_dir)
            return folder
        run_dir = None
        if write and world.main:
            run_dir = Path(out) if out else _new_run_dir(spec)
            run_dir.mkdir(parents=True, exist_ok=True)
        return cls(spec, model, optimizer, scheduler, classes, pre, run_dir)

    def _resume(self, run_dir: Path) -> None:
        from ..modelfile import read_weights

        state = read_weights(run_dir / "last.pt", what="--resume")
        extra = state.extra
        if state.classes != self.classes:
            raise SpecError([error("the data's classes differ from the run being resumed", "--resume",
                                   Location(str(run_dir)))])
        try:
            self._load_resumed(state.state_dict, extra, run_dir)
        except ArchcError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
            # last.pt is data: one changed by hand (or by anyone) is refused, never an internal error
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise SpecError([error(f"{run_dir / 'last.pt'} cannot be resumed from: {printable(text)}", "--resume",
                                   Location(str(run_dir)), hint="start the run afresh (without --resume)")]) from None
        # resumed from the run folder's own spec.yaml: args.json goes on naming the spec the run began with
        recorded = _read_args(run_dir)
        if recorded.get("spec") and _same_path(self.spec.file, run_dir / "spec.yaml"):
            self.source = recorded["spec"]

    def _load_resumed(self, state_dict: dict, extra: dict[str, Any], run_dir: Path) -> None:
        """The weights, the optimizer's and the schedule's state, the history and the epoch of last.pt."""
        self.model.load_state_dict(state_dict)
        recipe = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(extra["optimizer"])
        except (KeyError, ValueError):
            raise SpecError([error(f"{run_dir / 'last.pt'} holds another optimizer state (other parameters train)",
                                   "--resume", Location(str(run_dir)),
                                   hint="resume with the same --freeze as the run")]) from None
        self.scheduler.load_state_dict(extra["scheduler"])
        # the recipe as resumed (a --lr, --set train.weight_decay=... given again applies from here on);
        # unchanged, these are the values just loaded
        for group, fresh in zip(self.optimizer.param_groups, recipe):
            group.update({k: v for k, v in fresh.items() if k != "lr"})
            group["lr"] = fresh["initial_lr"] * lr_factor(self.spec, self.scheduler.last_epoch)
        self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        history, epoch, best = extra["history"], extra["epoch"], extra.get("best") or {}
        if not (isinstance(history, list) and all(isinstance(h, dict) for h in history) and isinstance(epoch, int)
                and not isinstance(epoch, bool) and 0 <= epoch == len(history) and isinstance(best, dict)):
            raise ValueError("its history, epoch or best result is not what archc writes")
        self.history, self.start = list(history), epoch
        self.saved = self.start
        self.best = dict(best)

    def describe(self, args: dict[str, Any]) -> None:
        """The resolved spec and the run's arguments."""
        if self.dir is None:
            return
        from ..spec.origins import annotated_yaml

        write_text(self.dir / "spec.yaml", annotated_yaml(self.spec.document, with_origins=False))
        write_text(self.dir / "args.json", json.dumps(args, indent=2))

    def checkpoint(self, epoch: int, full: bool) -> Any:
        from ..modelfile import ModelFile

        extra: dict[str, Any] = {"archc": __version__, "epoch": epoch, "history": self.history, "best": self.best}
        if full:
            extra.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         rng={"torch": torch.get_rng_state(), "python": list(random.getstate()[1])})
        return ModelFile(str(self.dir), self.model.state_dict(), spec=plain(self.spec.document),
                         spec_file=str(self.spec.file), heads=True, classes=self.classes,
                         preprocess=self.pre.as_dict(), extra=extra)

    def save(self, name: str, epoch: int) -> None:
        """``name.pt`` (resumable when ``name`` is last) and ``name.safetensors``."""
        from ..modelfile import write_model_file, write_safetensors

        if self.dir is None:
            return
        mf = self.checkpoint(epoch, full=name == "last")
        write_model_file(self.dir / f"{name}.pt", mf.payload())
        write_safetensors(self.dir / f"{name}.safetensors", mf)
        if name == "last":
            self.saved = epoch

    def end_epoch(self, row: dict[str, Any], data: str | Path, validated: bool, main: bool, board: Any) -> None:
        """After an epoch: its row, the best so far, the checkpoints, metrics.csv, curves.png and
        TensorBoard's scalars (without validation, every epoch is the best)."""
        self.history.append(row)
        epoch = row["epoch"]
        if main and row["val_accuracy"] is not None and row["val_accuracy"] > self.best.get("val_accuracy", -1):
            self.best = {"epoch": epoch, "val_accuracy": row["val_accuracy"]}
            self.save("best", epoch)
        self.save("last", epoch)
        if not validated:
            self.save("best", epoch)
        if self.dir is not None:
            write_metrics(self.dir / "metrics.csv", self.history)
            plot_curves(self.dir / "curves.png", self.history, f"{self.spec.name} on {Path(data).name}")
        if board is not None:
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_s"):
                if row[key] is not None:
                    board.add_scalar(key.replace("_", "/", 1) if key.startswith(("train", "val")) else key,
                                     row[key], epoch)
            board.flush()


# ----------------------------------------------------------------------------- one epoch

def _union(indices: set[int], world: World) -> set[int]:
    if world.size == 1:
        return indices
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, sorted(indices))
    return {i for part in gathered for i in part}


def _epoch(net: Any, model: torch.nn.Module, frozen: list[torch.nn.Module], d: Data, optimizer: Any, scaler: Any,
           spec: Spec, epoch: int, dev: torch.device, world: World, amp: bool, strict: bool, show: Progress,
           bad_files: set[int]) -> dict[str, Any]:
    """Train one epoch; the row of metrics.csv (without validation). Unreadable images' indices are
    added to ``bad_files``."""
    t = spec.train
    torch.manual_seed(t.seed * 100_003 + epoch)      # dropout draws: the same when resumed
    d.train_set.epoch = epoch
    d.loader.sampler.set_epoch(epoch)
    net.train()
    for module in frozen:                            # frozen layers keep their BatchNorm statistics
        module.eval()
    show.start(epoch + 1, t.epochs, len(d.loader))
    began = time.perf_counter()
    loss_sum = correct = count = skipped = 0.0
    for x, y, bad in d.loader:
        skipped += len(bad)
        bad_files.update(bad)
        if strict and bad:
            raise SpecError([error(f"unreadable image {d.train_samples[bad[0]][0]}", "--strict",
                                   Location(str(d.train_samples[bad[0]][0])),
                                   hint="without --strict, unreadable images are skipped and counted")])
        if len(y) == 0:
            continue
        x, y = x.to(dev), y.to(dev)
        with _autocast(dev, amp):
            outputs = net(x)
            loss = model.loss(outputs, y, label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        main = outputs[0] if isinstance(outputs, tuple) else outputs
        loss_sum += float(loss.detach()) * len(y)
        correct += (_predicted(main.detach(), len(d.classes)) == y).sum().item()
        count += len(y)
        elapsed = time.perf_counter() - began
        show.update(loss_sum / count, correct / count, count * world.size / max(elapsed, 1e-9))
    loss_sum, correct, count, skipped = _sum([loss_sum, correct, count, skipped], world, dev)
    seconds = time.perf_counter() - began
    return {"epoch": epoch + 1, "train_loss": loss_sum / count if count else float("nan"),
            "train_accuracy": correct / count if count else 0.0, "val_loss": None, "val_accuracy": None,
            "lr": optimizer.param_groups[0]["lr"], "images_per_s": count / seconds if seconds else 0.0,
            "seconds": seconds, "skipped": int(skipped)}


def _since_best(history: list[dict[str, Any]], best: dict[str, Any]) -> int:
    """Epochs since validation accuracy last improved."""
    return history[-1]["epoch"] - best["epoch"] if history and best else 0


# ----------------------------------------------------------------------------- the run

def train(spec_or_path: Spec | str | Path, data: str | Path, *, overrides: dict | list | None = None,
          val: str | Path | None = None, val_split: float | None = 0.1, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, seed: int | None = None, device: str = "auto",
          workers: int | None = None, amp: bool = False, out: str | Path | None = None, resume: bool = False,
          weights: str | Path | None = None, freeze: str | None = None, patience: int | None = None,
          tensorboard: bool = False, strict: bool = False, progress: bool = True, write: bool = True,
          pretrained: bool = False) -> TrainResult:
    """Train the network of a spec on an image folder with the spec's recipe (``train:``, ``data:``);
    the arguments override the recipe's fields. Returns the trained module and its history.

    ``weights`` starts from a checkpoint or state_dict (a classifier of another class count starts
    afresh, seeded), or from published weights: ``pretrained`` (the builder's default) or ``weights``
    a name (``IMAGENET1K_V1``) or URL, whose preprocessing and input size the run then uses (the
    spec's ``data:`` as ``--set`` values before the given ``overrides``); ``freeze`` keeps every
    layer up to and including that one as it is (weights and BatchNorm statistics), the new heads
    excepted; ``patience`` stops when validation accuracy has not improved for that many epochs;
    ``tensorboard`` writes TensorBoard event files into the run folder."""
    flags = {"train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed}
    extra = [f"{k}={v}" for k, v in flags.items() if v is not None]
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()] if isinstance(overrides, dict) else \
        list(overrides or [])
    overrides = [*sets, *extra]
    arguments = {"spec": None, "data": str(data), "val": str(val) if val is not None else None,
                 "val_split": val_split, "overrides": sets, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "seed": seed, "device": device, "workers": workers, "amp": amp,
                 "weights": str(weights) if weights else None, "pretrained": bool(pretrained), "freeze": freeze,
                 "patience": patience, "tensorboard": tensorboard, "strict": strict}
    from ..pretrained import resolve

    main = int(os.environ.get("RANK", "0")) == 0
    published = resolve(spec_or_path, weights, pretrained, overrides, progress=progress and main,
                        note=lambda line: print(f"archc: {line}", file=sys.stderr, flush=True) if main else None)
    weights, overrides = published.weights, published.overrides
    weights_file = published.file or (str(weights) if weights else None)
    spec = load_spec(spec_or_path, overrides)
    refuse_feature_extractor(spec, "train")
    if val_split is not None and not 0 < val_split < 1:
        raise SpecError([error(f"--val-split is a fraction in (0, 1), got {val_split}", "--val-split")])
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise SpecError([error(f"--patience is a number of epochs (1 or more), got {patience!r}", "--patience")])
    if patience is not None and val is None and not val_split:
        raise SpecError([error("--patience stops on validation accuracy, and this run has no validation images",
                               "--patience", hint="give --val DIR or --val-split FRACTION")])
    writer = _tensorboard_writer(write) if tensorboard else None
    dev, world = _distributed(spec, device)
    t = spec.train
    d = _data(spec, data, val, val_split, world, workers)

    # ---- model and recipe
    from ..backends.torch import build
    from ..backends.torch.weights import freeze as freeze_layers
    from ..passes import annotated_graph

    new_heads: list[Any] = []

    def note(head: Any) -> None:
        new_heads.append(head)
        if world.main:
            print(f"archc: {head}", file=sys.stderr, flush=True)

    model = build(spec, seed=t.seed, weights=weights, log=note).to(dev)
    weights = published = None                      # the tensors read are in the model now
    # new heads train even inside the frozen part (an auxiliary head before LAYER)
    frozen, spared = freeze_layers(model, annotated_graph(spec), spec, freeze, keep={h.path for h in new_heads}) \
        if freeze else ([], [])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(spec, trainable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(spec, e))
    scaler = torch.amp.GradScaler("cuda") if amp and dev.type == "cuda" else None
    net = torch.nn.parallel.DistributedDataParallel(model) if world.size > 1 else model

    run = RunFolder.open(spec, model, optimizer, scheduler, d.classes, d.train_set.preprocess, out, resume, write,
                         world)
    if run.source == str(spec.file) and isinstance(spec_or_path, (str, Path)) and spec.file != "<string>":
        run.source = str(spec_or_path)              # as given: a path, or a zoo name (resnet50)
    arguments["spec"] = run.source
    run.describe({"spec": run.source, "data": str(data), "val": str(val) if val else None,
                  "val_split": val_split, "device": str(dev), "workers": d.workers, "amp": amp,
                  "processes": world.size, "overrides": overrides, "weights": arguments["weights"],
                  "pretrained": arguments["pretrained"], "weights_file": weights_file,
                  "freeze": freeze, "patience": patience, "train": spec.train.model_dump(),
                  "data_options": spec.data.model_dump(), "classes": d.classes,
                  "arguments": arguments, "cwd": os.getcwd()})
    board = writer(log_dir=str(run.dir / "tensorboard")) if writer is not None and run.dir is not None else None
    if not resume:
        run.save("last", 0)                         # resumable from the start

    show = Progress(progress and world.main)
    bad_train: set[int] = set()
    bad_val: set[int] = set()
    interrupted = False
    stopped = None
    try:
        for epoch in range(run.start, t.epochs):
            row = _epoch(net, model, frozen, d, optimizer, scaler, spec, epoch, dev, world, amp, strict, show,
                         bad_train)
            scheduler.step()
            if d.val_loader is not None and world.main:
                result = evaluate_loader(model, d.val_loader, dev, len(d.classes), amp)
                row["val_loss"], row["val_accuracy"] = result["loss"], result["accuracy"]
                bad_val.update(result["bad"])
            run.end_epoch(row, data, validated=d.val_loader is not None, main=world.main, board=board)
            show.end(row, t.epochs)
            stop = patience is not None and world.main and _since_best(run.history, run.best) >= patience
            if world.size > 1:
                stop = bool(_sum([float(stop)], world, dev)[0])
                dist.barrier()
            if stop:
                stopped = {"epoch": row["epoch"], "patience": patience}
                break
        bad_train = _union(bad_train, world)
    except KeyboardInterrupt:
        interrupted = True
        if show.bar is not None:
            show.bar.close()
        if world.main and run.dir is not None:
            # args.json and spec.yaml say how the run began: the folder is all --resume needs
            print(f"\ninterrupted: {run.dir / 'last.pt'} holds epoch {run.saved} of {t.epochs}; "
                  f"continue with: archc train --out {shlex.quote(str(run.dir))} --resume", file=sys.stderr)
        elif world.main:
            print(f"\ninterrupted after epoch {run.history[-1]['epoch'] if run.history else 0} "
                  "(no run folder written: nothing to resume)", file=sys.stderr)
    finally:
        if board is not None:
            board.close()
        if world.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    model.eval()
    return TrainResult(model, run.history, run.dir, d.classes, len(bad_train) + len(bad_val), interrupted, run.best,
                       epochs=t.epochs, stopped=stopped, new_heads=[str(h) for h in new_heads], frozen=freeze,
                       spared=[h.layer for h in new_heads if h.path in spared],
                       trainable=sum(p.numel() for p in trainable),
                       parameters=sum(p.numel() for p in model.parameters()))


def summary(result: TrainResult, spec_name: str) -> str:
    """The one-screen summary at the end of a run."""
    h = result.history
    lines = [f"{spec_name}: {len(h)} epoch(s) on {len(result.classes)} classes ({', '.join(result.classes[:8])})"]
    if result.frozen:
        lines.append(f"parameters: {result.trainable:,} of {result.parameters:,} train "
                     f"(frozen: everything up to and including {result.frozen}"
                     f"{', except the new heads ' + ', '.join(result.spared) if result.spared else ''})")
    if h:
        last = h[-1]
        lines.append(f"last epoch: train loss {last['train_loss']:.4f}, train accuracy {last['train_accuracy']:.3f}"
                     + (f", validation accuracy {last['val_accuracy']:.3f}" if last["val_accuracy"] is not None else ""))
        lines.append(f"speed: {format_rate(sum(r['images_per_s'] for r in h) / len(h))} images/s; "
                     f"time: {sum(r['seconds'] for r in h):.1f} s")
    if result.best:
        lines.append(f"best: validation accuracy {result.best['val_accuracy']:.3f} at epoch {result.best['epoch']}")
    if result.stopped:
        lines.append(f"early stopping: validation accuracy did not improve for {result.stopped['patience']} "
                     f"epoch(s); stopped after epoch {result.stopped['epoch']} of {result.epochs}")
    lines.append(f"unreadable images skipped: {result.skipped}" if result.skipped else "unreadable images: none")
    if result.run_dir is not None:
        names = [n for n in ("metrics.csv", "curves.png", "last.pt", "best.pt", "last.safetensors",
                             "best.safetensors", "tensorboard/") if (result.run_dir / n).exists()]
        lines.append(f"run folder: {result.run_dir} ({', '.join(names)})")
    return "\n".join(lines)


__all__ = ["train", "summary", "TrainResult", "evaluate_loader", "lr_factor", "ArchcError"]
