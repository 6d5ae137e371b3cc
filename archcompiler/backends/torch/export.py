"""TorchScript and ONNX exports of a built module, written atomically."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ...errors import BackendError, error
from ...io import atomic_path
from ...spec import Spec


def export(model: torch.nn.Module, spec: Spec, kind: str, path: str | Path, keep_batch_norm: bool = False) -> Path:
    """Write ``model`` as TorchScript or ONNX. An ONNX file has each BatchNorm folded into the convolution
    before it (for deployment) unless ``keep_batch_norm``: then its BatchNormalization nodes stay, with the
    original parameters and running statistics, so ``archc import`` gives back the same parameters. A
    model whose weights pass protobuf's 2 GB has them beside the file, in ``PATH.data`` (external data)."""
    model.eval()
    example = torch.randn(1, *spec.input)
    if kind == "torchscript":
        # traced as it runs for inference: without autograd, nn.MultiheadAttention takes its fused path,
        # and the trace's check (which runs without autograd) then sees the same graph
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp))
        return Path(path)
    if kind == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise BackendError([error(f"ONNX export needs the package(s) {', '.join(missing)}", "--emit onnx",
                                      hint="pip install 'archcompiler[onnx]'")])
        with torch.no_grad():   # the outputs under their names: a dict's keys, a named tuple's fields
            given = model.eval()(example)
        names = list(given) if isinstance(given, dict) else list(getattr(given, "_fields", ["logits"]))
        program = _onnx_program(model, example, names)
        with _batch_norm_kept(keep_batch_norm):
            program.optimize()          # constant folding and onnxscript's rewrite rules
        if _bytes(model) < ONNX_ONE_FILE_BYTES:
            with atomic_path(path) as tmp:
                program.save(str(tmp), external_data=False)
        else:
            _save_with_external_data(program.model, Path(path))
        return Path(path)
    raise BackendError([error(f"unknown export kind {kind!r}", "--emit")])


def _onnx_program(model: torch.nn.Module, example: torch.Tensor, names: list[str]) -> object:
    """torch's ONNX program of ``model``, traced with scaled_dot_product_attention's math kernel: torch 2.13's
    decomposition of the CPU flash kernel with an attention mask (a position bias: BEiT's, MaxViT's
    attention as archc lays them out) gives its output strides that a later view of it refuses, and a failed
    export leaves the process unable to export again; the math kernel gives the same ONNX graph for the
    others (ViT, Swin, MaxViT: the same nodes). A failure of the exporter is refused in one line."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel([SDPBackend.MATH]):
            return torch.onnx.export(model, (example,), None, input_names=["image"], output_names=names,
                                     dynamo=True, optimize=False)
    except Exception as exc:  # noqa: BLE001 (torch's exporter raises many kinds: refused, its cause named)
        cause = exc.__cause__ or exc
        reason = " ".join(str(cause).split())[:300]
        reason = reason if reason.isprintable() else repr(reason)[1:-1]
        raise BackendError([error(f"torch's ONNX exporter fails on this model: {type(cause).__name__}: {reason}",
                                  "--emit onnx")]) from None


ONNX_ONE_FILE_BYTES = 2 ** 31 - 2 ** 24     # protobuf's limit for one file, less room for the graph itself


def _save_with_external_data(model: object, path: Path) -> None:
    """A model over protobuf's 2 GB: the graph in ``path``, the weights beside it in ``PATH.data`` (the name
    the graph records). Both are written in a private folder beside them under their final names, then
    each replaces its target in one step, the weights first: an interruption leaves the old pair, or the
    new weights beside the old graph, never a graph naming a half-written file."""
    from onnxscript import ir

    data = path.with_name(path.name + ".data")
    with atomic_path(path) as tmp, atomic_path(data) as tmp_data:     # the inner one (the weights) lands first
        with tempfile.TemporaryDirectory(prefix=f".{path.name}-", dir=path.parent) as folder:
            ir.save(model, str(Path(folder) / path.name), external_data=data.name)
            os.replace(Path(folder) / data.name, tmp_data)
            os.replace(Path(folder) / path.name, tmp)


def _bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


@contextmanager
def _batch_norm_kept(keep: bool) -> Iterator[None]:
    """onnxscript's optimizer without its rules that fold BatchNormalization into Conv / Gemm (its other
    rules, and constant folding, still run: the graph stays as small as the default export's)."""
    if not keep:
        yield
        return
    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import _fuse_batchnorm

    folding = set(_fuse_batchnorm.rules.rules)
    default = rewriter._DEFAULT_REWRITE_RULES
    rewriter._DEFAULT_REWRITE_RULES = tuple(r for r in default if r not in folding)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = default
