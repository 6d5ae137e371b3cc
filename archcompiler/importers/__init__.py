"""``archc import``: an existing model becomes a readable spec.

- :mod:`.torch` traces a PyTorch module with torch.fx (this runs the user's own code, by the user's
  explicit choice) and maps each call to a layer through the torch backend's reverse table
  (``backends/torch/codegen.py``, ``FROM_TORCH``);
- :mod:`.structure` turns the flat list of layers into a spec a person reads: repeated sub-modules
  become blocks, consecutive uses of a block a table;
- :mod:`.onnx` reads an ONNX file as data (nothing in it runs).

torch and onnx are imported only when an import runs.
"""

from __future__ import annotations

from .flat import Flat, Item
from .structure import spec_text

__all__ = ["Flat", "Item", "spec_text"]
