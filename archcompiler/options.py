"""The options of a training run, a sweep, a build and a drawing, as records: the command line, the Python API and the
sweep pass them along whole (``archc train``'s flags are :class:`TrainOptions`' fields). Torch-free."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainOptions:
    """How a run trains, beside the spec's recipe (its ``train:`` and ``data:`` sections): each field
    given (not None) overrides the recipe's, as ``archc train``'s flag of the same name does.

    Args:
        val: a validation folder laid out like the training data; else ``val_split`` of the training
            images is held out per class (None or 0: no validation).
        epochs, batch_size, lr, seed: the recipe's ``train.epochs`` and the rest, overridden.
        device: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda``; ``workers``: data-loading
            processes (default up to 4); ``amp``: mixed precision.
        out: the run folder (default ``runs/<name>-N``, a new one per run); ``resume``: go on from its
            ``last.pt``; ``write``: False runs without a folder.
        weights: a checkpoint, a state_dict, or published weights by name (``IMAGENET1K_V1``) or URL;
            ``pretrained``: the builder's default published weights, with their preprocessing. A
            classifier of another class count starts afresh (seeded).
        freeze: keep every layer up to and including this one as it is (the new heads excepted).
        patience: stop when the validation metric (accuracy, or mean IoU) has not improved for this
            many epochs.
        tensorboard: TensorBoard event files in the run folder; ``strict``: an unreadable image stops the
            run (by default it is skipped and counted); ``progress``: progress lines on stderr.

    Example::

        archcompiler.train("googlenet-small", "digits/", TrainOptions(epochs=3, lr=0.01))
    """

    val: str | Path | None = None
    val_split: float | None = 0.1
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    device: str = "auto"
    workers: int | None = None
    amp: bool = False
    out: str | Path | None = None
    resume: bool = False
    weights: str | Path | None = None
    pretrained: bool = False
    freeze: str | None = None
    patience: int | None = None
    tensorboard: bool = False
    strict: bool = False
    progress: bool = True
    write: bool = True

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with these fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_given(cls, given: dict[str, Any]) -> TrainOptions:
        """The options from a dict of field values (args.json's ``arguments``, the command line's flags),
        keys that are no field (``spec``, ``data``, ``overrides``) and None values left out (the default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in given.items() if k in names and v is not None})


@dataclass(frozen=True)
class SweepOptions:
    """How ``archc sweep`` measures its variants.

    Args:
        batch: images per batch for the totals, memory and latency.
        optimize: the optimised inference module (``archc build --optimize``).
        output: a folder that receives ``sweep.json`` and ``pareto.png`` (and, when training, the study).
        machine: a machine profile (its file); default: the one ``archc calibrate`` saved.
        measure: build and time every variant in ``rounds`` interleaved rounds on ``device`` (imports torch).
        progress: a progress bar on stderr.
    """

    batch: int = 1
    optimize: bool = False
    output: str | Path | None = None
    machine: str | Path | None = None
    measure: bool = False
    rounds: int = 5
    device: str = "cpu"
    progress: bool = False


@dataclass(frozen=True)
class BuildOptions:
    """How ``archc build`` builds the module (see :func:`archcompiler.api.build`).

    Args:
        seed: initialisation seed (0 when None).
        weights: a state_dict, a ``.pt`` / ``.safetensors`` file, or published weights by name or URL;
            ``pretrained``: the builder's default published weights.
        heads: build the training-only heads (False: without them, to load checkpoints that lack them).
        check_memory: refuse before allocating when parameters and activations would not fit.
        optimize: the inference module (BatchNorm folded, ReLU fused, channels-last).
        compile: wrap the module in ``torch.compile`` where a compiler is available.
    """

    seed: int | None = None
    weights: str | Path | None = None
    pretrained: bool = False
    heads: bool = True
    check_memory: bool = True
    optimize: bool = False
    compile: bool = False


@dataclass(frozen=True)
class DrawOptions:
    """What a drawing shows (``archc draw``'s flags).

    Args:
        collapse: one box per row (block instances folded); ``depth``: how many levels of block instances
            to unfold instead.
        color: ``none``, ``flops`` or ``params``: boxes shaded by their share of it.
        rankdir: ``TB`` (top to bottom) or ``LR``.
        optimized: the inference graph (BatchNorm folded, ReLU fused, heads removed).
    """

    collapse: bool = False
    depth: int | None = None
    color: str = "none"
    rankdir: str = "TB"
    optimized: bool = False
