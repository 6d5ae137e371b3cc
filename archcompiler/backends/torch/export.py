"""TorchScript and ONNX exports of a built module, written atomically."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ...errors import BackendError, error
from ...io import atomic_path
from ...spec import Spec


def export(model: torch.nn.Module, spec: Spec, kind: str, path: str | Path) -> Path:
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
        with atomic_path(path) as tmp:
            torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamo=True, external_data=False)
        return Path(path)
    raise BackendError([error(f"unknown export kind {kind!r}", "--emit")])
