"""Backends: each turns the annotated IR into something else; none imports another.

- :mod:`.torch`: a runnable ``torch.nn.Module`` and standalone PyTorch source (imports torch);
- :mod:`.dot`: graphviz diagrams (imports graphviz).
"""
