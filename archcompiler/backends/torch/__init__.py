"""The torch backend: a runnable nn.Module, standalone source, TorchScript and ONNX exports."""

from .build import Weights, build, load_model, save_model
from .codegen import generate
from .info import ArchcInfo, archc_info
from .weights import load_weights

__all__ = ["build", "Weights", "load_model", "load_weights", "save_model", "generate", "ArchcInfo", "archc_info"]
