"""``archc train``: the spec's recipe on a folder of images, one process or many (torchrun).

The loop itself: the data, the model and its recipe, the epochs, Ctrl-C. What the run writes is the run
folder's (:mod:`.run`: ``spec.yaml``, ``args.json``, ``metrics.csv``, ``curves.png``, ``last.pt`` /
``best.pt`` and their ``.safetensors``, TensorBoard's events), what it says the console's
(:mod:`.console`), its optimizer and schedule the recipe's (:mod:`.recipe`).

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
import functools
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ArchcError, Location, RunError, SpecError, error
from ..options import TrainOptions
from ..spec import Spec, load_spec
from .clips import ClipFolder, is_clip_network, scan_clips
from .console import Progress
from .data import ImageFolder, Preprocess, collate, refuse_feature_extractor, scan, split
from .masks import IGNORE_INDEX, MaskFolder, scan_masks
from .processes import World, all_sum, all_union, distributed
from .recipe import _optimizer, lr_factor
from .run import RunFolder, _tensorboard_writer


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


def main_shape(spec: Spec) -> tuple[int, ...]:
    """The shape of the network's main output: ``(classes,)``, or ``(classes, H, W)`` for a segmentation
    network, which trains on images and masks (:mod:`.masks`)."""
    from ..passes import annotated_graph

    g = annotated_graph(spec)
    main = next(o for o in g.graph["outputs"].values() if not o["training_only"])
    return tuple(g.nodes[main["node"]]["shape"])


def _check_classes(spec: Spec, classes: list[str], where: str) -> None:
    if len(classes) < 2:
        raise RunError([error(f"{where} has {len(classes)} class folder(s); training needs at least 2",
                               "--data", Location(where), hint="one sub-folder per class: train/cats, train/dogs")])
    units = main_shape(spec)[0]
    if units != len(classes) and not (units == 1 and len(classes) == 2):
        hint = f"--set num_classes={len(classes)}" if "num_classes" in spec.params else \
            f"give the spec's last layer {len(classes)} outputs"
        raise RunError([error(f"the data has {len(classes)} classes ({', '.join(classes[:6])}"
                               f"{', ...' if len(classes) > 6 else ''}) but the spec's main output has {units} units",
                               "--data", Location(where), hint=hint)])


# ----------------------------------------------------------------------------- the loop

def _loader(dataset: Any, batch: int, world: World, shuffle: bool, workers: int, seed: int) -> Any:
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


def evaluate_loader(model: torch.nn.Module, loader: Any, device: torch.device, n_classes: int,
                    amp: bool = False) -> dict[str, Any]:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted) of the main output;
    for a segmentation network, over the labelled pixels, with each class's intersection over union
    (``iou``) and their mean (``miou``, over the classes that occur or are predicted)."""
    model.eval()
    confusion = torch.zeros(n_classes * n_classes, dtype=torch.long)
    loss_sum, count, skipped, bad_files, dense = 0.0, 0, 0, [], False
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
            pred = _predicted(main_output(logits), n_classes)
            known = (y != IGNORE_INDEX) & (y < n_classes)
            confusion += torch.bincount((y[known] * n_classes + pred[known]).cpu(), minlength=n_classes * n_classes)
            count += len(y)
            dense = dense or y.dim() > 1
    confusion = confusion.view(n_classes, n_classes)
    total = confusion.sum().item()
    result = {"loss": loss_sum / count if count else None, "accuracy": confusion.diag().sum().item() / total
              if total else None, "confusion": confusion, "count": count, "skipped": skipped, "bad": bad_files}
    if dense:
        union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
        iou = [confusion[i, i].item() / union[i].item() if union[i] else None for i in range(n_classes)]
        present = [v for v in iou if v is not None]
        result.update(iou=iou, miou=sum(present) / len(present) if present else None, pixels=total)
    return result


def main_output(outputs: Any) -> torch.Tensor:
    """The main output of what forward() returned: the tensor, a named tuple's first field, or a dict's first
    value (the spec's ``torch.returns: dict``; the main output comes first)."""
    if isinstance(outputs, dict):
        return next(iter(outputs.values()))
    return outputs[0] if isinstance(outputs, tuple) else outputs


def _predicted(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    if logits.shape[1] == 1 and n_classes == 2:          # one unit: the probability of class 1
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


def _autocast(device: torch.device, amp: bool) -> Any:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


# ----------------------------------------------------------------------------- set-up

@dataclass
class Data:
    classes: list[str]
    train_samples: list[tuple[Path, Any]]       # (image, class index), or (image, mask)
    val_samples: list[tuple[Path, Any]]
    train_set: Any                              # an ImageFolder, or a MaskFolder
    val_set: Any
    loader: Any
    val_loader: Any
    workers: int


def _data(spec: Spec, data: str | Path, val: str | Path | None, val_split: float | None, world: World,
          workers: int | None) -> Data:
    """The class folders (or, for a segmentation network, the images and their masks; for a clip network,
    the class folders of clip folders), the training and validation split, and their loaders."""
    t = spec.train
    pre = Preprocess.from_spec(spec)
    shape = main_shape(spec)
    what = "images"
    if len(shape) == 3:
        classes, samples = scan_masks(data, shape[0])
        dataset: Any = MaskFolder
        val_classes, val_samples = scan_masks(val, shape[0]) if val is not None else (classes, [])
    else:
        folders = scan
        dataset = ImageFolder
        if is_clip_network(spec):                   # DATA/CLASS/CLIP/frames, T frames a clip
            folders, dataset, what = scan_clips, functools.partial(ClipFolder, frames=spec.input[1]), "clips"
        classes, samples = folders(data)
        _check_classes(spec, classes, str(data))
        val_classes, val_samples = folders(val) if val is not None else (classes, [])
    if val is not None:
        if val_classes != classes:
            raise RunError([error(f"the validation folder's classes ({', '.join(val_classes)}) differ from the "
                                   f"training folder's ({', '.join(classes)})", "--val", Location(str(val)))])
        train_samples = samples
    elif val_split:
        labelled = samples if dataset is not MaskFolder else [(pair, 0) for pair in samples]
        train_samples, val_samples = split(labelled, val_split, t.seed)
        if dataset is MaskFolder:
            train_samples, val_samples = [s for s, _ in train_samples], [s for s, _ in val_samples]
    else:
        train_samples = samples
    if not train_samples:
        hint = f"images end in {', '.join(sorted(['.jpg', '.png', '.bmp', '.webp']))} ..."
        raise RunError([error(f"no {what} to train on in {data}", "--data", Location(str(data)),
                               hint=hint if what == "images" else "a clip is a folder of frames: DIR/CLASS/CLIP/00001.jpg, "
                               "...")])
    if val is not None and not val_samples:
        raise RunError([error(f"no {what} in the validation folder {val}", "--val", Location(str(val)))])
    train_set = dataset(train_samples, pre, train=True, seed=t.seed)
    val_set = dataset(val_samples, pre, train=False, seed=t.seed)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    loader = _loader(train_set, t.batch_size // world.size, world, True, workers, t.seed)
    val_loader = _loader(val_set, t.batch_size, World(), False, workers, t.seed) if val_samples else None
    return Data(classes, train_samples, val_samples, train_set, val_set, loader, val_loader, workers)


# ----------------------------------------------------------------------------- one epoch

@dataclass
class _Session:
    """What every epoch of a run uses: the network (``net``: DistributedDataParallel's wrapper, or the
    model), its recipe's optimizer and loss scaler, the data, the device and the processes."""

    net: Any
    model: torch.nn.Module
    frozen: list[torch.nn.Module]
    data: Data
    optimizer: Any
    scaler: Any
    spec: Spec
    dev: torch.device
    world: World
    amp: bool
    strict: bool


def _step(s: _Session, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """One optimizer step on a batch; the outputs and the loss."""
    with _autocast(s.dev, s.amp):
        outputs = s.net(x)
        loss = s.model.loss(outputs, y, label_smoothing=s.spec.train.label_smoothing)
    s.optimizer.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        loss.backward()
        s.optimizer.step()
    return outputs, loss


def _epoch(s: _Session, epoch: int, show: Progress, bad_files: set[int]) -> dict[str, Any]:
    """Train one epoch; the row of metrics.csv (without validation). Unreadable images' indices are
    added to ``bad_files``."""
    d, t = s.data, s.spec.train
    torch.manual_seed(t.seed * 100_003 + epoch)      # dropout draws: the same when resumed
    d.train_set.epoch = epoch
    d.loader.sampler.set_epoch(epoch)
    s.net.train()
    for module in s.frozen:                          # frozen layers keep their BatchNorm statistics
        module.eval()
    show.start(epoch + 1, t.epochs, len(d.loader))
    began = time.perf_counter()
    loss_sum = correct = count = labelled = skipped = 0.0
    for x, y, bad in d.loader:
        skipped += len(bad)
        bad_files.update(bad)
        if s.strict and bad:
            what = getattr(d.train_set, "what", "image")     # a clip: one of its frames, or it has none
            raise RunError([error(f"unreadable {what} {d.train_samples[bad[0]][0]}", "--strict",
                                   Location(str(d.train_samples[bad[0]][0])),
                                   hint=f"without --strict, unreadable {what}s are skipped and counted")])
        if len(y) == 0:
            continue
        x, y = x.to(s.dev), y.to(s.dev)
        outputs, loss = _step(s, x, y)
        main = main_output(outputs)
        loss_sum += float(loss.detach()) * len(y)
        known = y != IGNORE_INDEX                 # every image's class; a mask's labelled pixels
        correct += (_predicted(main.detach(), len(d.classes)) == y)[known].sum().item()
        labelled += known.sum().item()
        count += len(y)
        elapsed = time.perf_counter() - began
        show.update(loss_sum / count, correct / max(labelled, 1), count * s.world.size / max(elapsed, 1e-9))
    loss_sum, correct, count, labelled, skipped = all_sum([loss_sum, correct, count, labelled, skipped], s.world, s.dev)
    seconds = time.perf_counter() - began
    return {"epoch": epoch + 1, "train_loss": loss_sum / count if count else float("nan"),
            "train_accuracy": correct / labelled if labelled else 0.0, "val_loss": None, "val_accuracy": None,
            "val_miou": None,
            "lr": s.optimizer.param_groups[0]["lr"], "images_per_s": count / seconds if seconds else 0.0,
            "seconds": seconds, "skipped": int(skipped)}


def _since_best(history: list[dict[str, Any]], best: dict[str, Any]) -> int:
    """Epochs since the validation metric (accuracy, or a segmentation network's mean IoU) last improved."""
    return history[-1]["epoch"] - best["epoch"] if history and best else 0


# ----------------------------------------------------------------------------- the run

def _arguments(data: str | Path, sets: list[str], o: TrainOptions) -> dict[str, Any]:
    """train()'s arguments as given (args.json's ``arguments``, which ``--resume`` takes back)."""
    return {"spec": None, "data": str(data), "val": str(o.val) if o.val is not None else None,
            "val_split": o.val_split, "overrides": sets, "epochs": o.epochs, "batch_size": o.batch_size,
            "lr": o.lr, "seed": o.seed, "device": o.device, "workers": o.workers, "amp": o.amp,
            "weights": str(o.weights) if o.weights else None, "pretrained": bool(o.pretrained),
            "freeze": o.freeze, "patience": o.patience, "tensorboard": o.tensorboard, "strict": o.strict}


def _check_options(o: TrainOptions) -> None:
    """The options' values that no recipe field checks (a located error each)."""
    if o.val_split is not None and not 0 < o.val_split < 1:
        raise SpecError([error(f"--val-split is a fraction in (0, 1), got {o.val_split}", "--val-split")])
    patience = o.patience
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise SpecError([error(f"--patience is a number of epochs (1 or more), got {patience!r}", "--patience")])
    if patience is not None and o.val is None and not o.val_split:
        raise SpecError([error("--patience stops on validation accuracy, and this run has no validation images",
                               "--patience", hint="give --val DIR or --val-split FRACTION")])


def _model(spec: Spec, weights: Any, freeze: str | None, world: World, dev: torch.device) -> tuple[Any, ...]:
    """The module with its starting weights, the classifier heads started afresh (each said on stderr),
    the frozen modules and the new heads spared inside the frozen part."""
    from ..backends.torch import Weights, build
    from ..backends.torch.weights import freeze as freeze_layers
    from ..passes import annotated_graph

    new_heads: list[Any] = []

    def note(head: Any) -> None:
        new_heads.append(head)
        if world.main:
            print(f"archc: {head}", file=sys.stderr, flush=True)

    model = build(spec, seed=spec.train.seed, weights=Weights(weights, log=note)).to(dev)
    # new heads train even inside the frozen part (an auxiliary head before LAYER)
    frozen, spared = freeze_layers(model, annotated_graph(spec), spec, freeze, keep={h.path for h in new_heads}) \
        if freeze else ([], [])
    return model, new_heads, frozen, spared


def _epochs(s: _Session, run: RunFolder, o: TrainOptions, scheduler: Any, board: Any, data: str | Path) -> dict[str, Any]:
    """The epochs from the run's start to the recipe's end (or early stopping, or Ctrl-C): what they met."""
    d, world, t = s.data, s.world, s.spec.train
    show = Progress(o.progress and world.main)
    bad_train: set[int] = set()
    bad_val: set[int] = set()
    met: dict[str, Any] = {"interrupted": False, "stopped": None}
    try:
        for epoch in range(run.start, t.epochs):
            row = _epoch(s, epoch, show, bad_train)
            scheduler.step()
            if d.val_loader is not None and world.main:
                result = evaluate_loader(s.model, d.val_loader, s.dev, len(d.classes), s.amp)
                row["val_loss"], row["val_accuracy"] = result["loss"], result["accuracy"]
                row["val_miou"] = result.get("miou")
                bad_val.update(result["bad"])
            run.end_epoch(row, data, validated=d.val_loader is not None, main=world.main, board=board)
            show.end(row, t.epochs)
            stop = o.patience is not None and world.main and _since_best(run.history, run.best) >= o.patience
            if world.size > 1:
                stop = bool(all_sum([float(stop)], world, s.dev)[0])
                dist.barrier()
            if stop:
                met["stopped"] = {"epoch": row["epoch"], "patience": o.patience}
                break
        bad_train = all_union(bad_train, world)
    except KeyboardInterrupt:
        met["interrupted"] = True
        if show.bar is not None:
            show.bar.close()
        _say_interrupted(run, world, t.epochs)
    finally:
        if board is not None:
            board.close()
        if world.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    met["skipped"] = len(bad_train) + len(bad_val)
    return met


def _say_interrupted(run: RunFolder, world: World, epochs: int) -> None:
    if world.main and run.dir is not None:
        # args.json and spec.yaml say how the run began: the folder is all --resume needs
        print(f"\ninterrupted: {run.dir / 'last.pt'} holds epoch {run.saved} of {epochs}; "
              f"continue with: archc train --out {shlex.quote(str(run.dir))} --resume", file=sys.stderr)
    elif world.main:
        print(f"\ninterrupted after epoch {run.history[-1]['epoch'] if run.history else 0} "
              "(no run folder written: nothing to resume)", file=sys.stderr)


def train(spec_or_path: Spec | str | Path, data: str | Path, options: TrainOptions | None = None, *,
          overrides: dict | list | None = None) -> TrainResult:
    """Train the network of a spec on an image folder with the spec's recipe (``train:``, ``data:``);
    ``options`` (:class:`~archcompiler.options.TrainOptions`) override the recipe's fields and say where
    the run goes. Returns the trained module and its history.

    Published weights (``options.pretrained``, or ``options.weights`` a name or URL) bring their
    preprocessing and input size (the spec's ``data:`` as ``--set`` values before the given
    ``overrides``)."""
    from ..pretrained import resolve

    o = options or TrainOptions()
    flags = {"train.epochs": o.epochs, "train.batch_size": o.batch_size, "train.lr": o.lr, "train.seed": o.seed}
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()] if isinstance(overrides, dict) else \
        list(overrides or [])
    arguments = _arguments(data, sets, o)
    main = int(os.environ.get("RANK", "0")) == 0
    published = resolve(spec_or_path, o.weights, o.pretrained, [*sets, *(f"{k}={v}" for k, v in flags.items()
                                                                       if v is not None)],
                        progress=o.progress and main,
                        note=lambda line: print(f"archc: {line}", file=sys.stderr, flush=True) if main else None)
    weights_file = published.file or (str(o.weights) if o.weights else None)
    spec = load_spec(spec_or_path, published.overrides)
    refuse_feature_extractor(spec, "train")
    _check_options(o)
    writer = _tensorboard_writer(o.write) if o.tensorboard else None
    dev, world = distributed(spec, o.device)
    d = _data(spec, data, o.val, o.val_split, world, o.workers)

    model, new_heads, frozen, spared = _model(spec, published.weights, o.freeze, world, dev)
    overrides = published.overrides
    published = None                                # the tensors read are in the model now
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(spec, trainable)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(spec, e))
    scaler = torch.amp.GradScaler("cuda") if o.amp and dev.type == "cuda" else None
    net = torch.nn.parallel.DistributedDataParallel(model) if world.size > 1 else model

    run = RunFolder.open(spec, model, optimizer, scheduler, d.classes, d.train_set.preprocess, o, world.main)
    if run.source == str(spec.file) and isinstance(spec_or_path, (str, Path)) and spec.file != "<string>":
        run.source = str(spec_or_path)              # as given: a path, or a zoo name (resnet50)
    arguments["spec"] = run.source
    run.describe({"spec": run.source, "data": str(data), "val": arguments["val"],
                  "val_split": o.val_split, "device": str(dev), "workers": d.workers, "amp": o.amp,
                  "processes": world.size, "overrides": overrides,
                  "weights": arguments["weights"], "pretrained": arguments["pretrained"], "weights_file": weights_file,
                  "freeze": o.freeze, "patience": o.patience, "train": spec.train.model_dump(),
                  "data_options": spec.data.model_dump(), "classes": d.classes,
                  "arguments": arguments, "cwd": os.getcwd()})
    board = writer(log_dir=str(run.dir / "tensorboard")) if writer is not None and run.dir is not None else None
    if not o.resume:
        run.save("last", 0)                         # resumable from the start

    session = _Session(net, model, frozen, d, optimizer, scaler, spec, dev, world, o.amp, o.strict)
    met = _epochs(session, run, o, scheduler, board, data)
    model.eval()
    return TrainResult(model, run.history, run.dir, d.classes, met["skipped"], met["interrupted"], run.best,
                       epochs=spec.train.epochs, stopped=met["stopped"], new_heads=[str(h) for h in new_heads],
                       frozen=o.freeze, spared=[h.layer for h in new_heads if h.path in spared],
                       trainable=sum(p.numel() for p in trainable),
                       parameters=sum(p.numel() for p in model.parameters()))


__all__ = ["train", "TrainResult", "evaluate_loader", "ArchcError"]
