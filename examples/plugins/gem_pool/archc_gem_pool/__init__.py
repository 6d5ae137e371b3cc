"""GeM pooling for archc: the spec op ``gem_pool`` (``op.py``, read by archc without torch) and the torch
module the generated code uses (``torch.py``)."""
