"""A run folder: the resolved spec and the run's arguments (``spec.yaml``, ``args.json``: ``--resume``
takes them back, see :func:`resume_arguments`), ``metrics.csv``, ``curves.png``, the checkpoints
(``last.pt``, resumable; ``best.pt``; their ``.safetensors`` twins) and TensorBoard's event files."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

import torch

from ..errors import ArchcError, Location, RunError, SpecError, error, printable
from ..io import atomic_path, write_text
from ..options import TrainOptions
from ..spec import Spec, load_spec, parse_override
from ..spec.source import plain
from ..version import __version__
from .data import Preprocess
from .recipe import lr_factor

METRICS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr", "images_per_s",
           "seconds", "skipped"]            # val_miou: a segmentation network's mean IoU


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


def _tensorboard_writer(write: bool) -> Any:
    """TensorBoard's writer class, refused before anything is written when it cannot be used."""
    if not write:
        raise SpecError([error("--tensorboard writes into the run folder, and this run writes none", "--tensorboard")])
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RunError([error("--tensorboard needs the tensorboard package, which is not installed", "--tensorboard",
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
            raise RunError([error("nothing to resume: no runs/ folder of this spec here", "--resume",
                                   hint="give the run folder with --out runs/NAME")])
    else:
        run_dir = Path(out)
    args = _read_args(run_dir)
    if not args:
        if "spec" in given and "data" in given:       # a folder without args.json: what the command line says
            return {**given, "out": str(run_dir)}, []
        raise RunError([error(f"nothing to resume: no args.json in {run_dir}", "--resume", Location(str(run_dir)),
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
        raise RunError([error(f"{run_dir / 'args.json'} does not say the run's {missing}", "--resume",
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
             pre: Preprocess, options: TrainOptions, main: bool) -> RunFolder:
        """The run folder ``options`` say (``out``, ``resume``, ``write``): a new one, or the one resumed,
        its weights and state loaded into ``model``, ``optimizer`` and ``scheduler``; only the main
        process writes."""
        out, write = options.out, options.write
        if options.resume:
            run_dir = Path(out) if out else _latest_run_dir(spec)
            if run_dir is None or not (run_dir / "last.pt").is_file():
                raise RunError([error(f"nothing to resume: no last.pt in {run_dir or 'runs/'}", "--resume",
                                       hint="give the run folder with --out runs/NAME")])
            folder = cls(spec, model, optimizer, scheduler, classes, pre, run_dir if write and main else None)
            folder._resume(run_dir)
            return folder
        run_dir = None
        if write and main:
            run_dir = Path(out) if out else _new_run_dir(spec)
            run_dir.mkdir(parents=True, exist_ok=True)
        return cls(spec, model, optimizer, scheduler, classes, pre, run_dir)

    def _resume(self, run_dir: Path) -> None:
        from ..modelfile import read_weights

        state = read_weights(run_dir / "last.pt", what="--resume")
        extra = state.extra
        if state.classes != self.classes:
            raise RunError([error("the data's classes differ from the run being resumed", "--resume",
                                   Location(str(run_dir)))])
        try:
            self._load_resumed(state.state_dict, extra, run_dir)
        except ArchcError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
            # last.pt is data: one changed by hand (or by anyone) is refused, never an internal error
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise RunError([error(f"{run_dir / 'last.pt'} cannot be resumed from: {printable(text)}", "--resume",
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
            raise RunError([error(f"{run_dir / 'last.pt'} holds another optimizer state (other parameters train)",
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
        """After an epoch: its row, the best so far (by validation accuracy, or mean IoU for a segmentation
        network), the checkpoints, metrics.csv, curves.png and TensorBoard's scalars (without validation,
        every epoch is the best)."""
        self.history.append(row)
        epoch = row["epoch"]
        # the best epoch: a segmentation network's by mean IoU, a classifier's by accuracy
        key = "val_miou" if row.get("val_miou") is not None else "val_accuracy"
        if main and row[key] is not None and row[key] > self.best.get(key, -1):
            self.best = {"epoch": epoch, "val_accuracy": row["val_accuracy"],
                         **({"val_miou": row["val_miou"]} if key == "val_miou" else {})}
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
