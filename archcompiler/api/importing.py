"""The way back: an existing PyTorch module or ONNX file becomes a spec."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def import_module(model: Any, input: tuple[int, ...] | list[int] | None = None, name: str | None = None,
                  source: str | None = None, blocks: bool = True, verify: bool = True) -> str:
    """The spec of a PyTorch module (``archc import``), as YAML text: ``model`` is traced with
    torch.fx (this runs its forward), each call mapped to a layer; repeated sub-modules become blocks
    and tables. ``input`` is (C, H, W) (default: the model's ``INPUT_SHAPE`` or 3 x 224 x 224).
    Built, the spec has the module's state_dict keys: ``build(load_spec(text)).load_state_dict(
    model.state_dict())`` loads strictly.

    With ``verify`` (the default) the spec is built with the module's weights (BatchNorm statistics
    perturbed) and compared with it on a seeded input before it is returned: blocks and tables that
    compute anything else fall back to one layer per line; a spec that still differs is an error
    naming the first layer whose output differs. Raises :class:`BackendError` naming the module path,
    its class and the closest supported op for what does not map.

    >>> import torchvision
    >>> text = import_module(torchvision.models.resnet18(), input=(3, 224, 224))   # doctest: +SKIP
    """
    from ..importers.pytorch import trace
    from ..importers.verify import verified_spec

    name = name or _snake(type(model).__name__)
    flat = trace(model, tuple(input) if input else None, name=name, source=source or f"a {type(model).__name__}")
    text, _ = verified_spec(model, flat, blocks=blocks, verify=verify)
    return text


def import_model(target: str, output: str | Path | None = None, *, weights: str | Path | None = None,
                 name: str | None = None, args: list[str] | None = None, input: str | tuple[int, ...] | None = None,
                 blocks: bool = True, verify: bool = True) -> dict[str, Any]:
    """``archc import``: the spec of a PyTorch callable or an ONNX file, verified and written.

    Args:
        target: ``MODULE:CALLABLE`` (``torchvision.models:resnet50``, ``my_model.py:Net``: this imports and
            runs that code) or ``MODEL.onnx`` (data: nothing in it runs).
        output: the spec file (default: nothing written; the text is returned).
        weights: the weights' file (safetensors; default beside ``output``): the ONNX file's initializers or
            the module's state_dict, so that ``archc train SPEC --weights FILE`` fine-tunes them.
        name: the spec's name; ``args``: the callable's arguments, ``["KEY=VALUE", ...]`` (numbers,
            true/false or text); ``input``: ``"CxHxW"`` or (C, H, W) (default: the model's ``INPUT_SHAPE``,
            or 3 x 224 x 224).
        blocks: repeated sub-modules as blocks and tables (False: one layer per line).
        verify: build the spec and compare it with the source (the module, or onnxruntime) on a seeded
            input before anything is written (a spec that differs is never written).

    Returns:
        ``text`` (the spec), ``notes`` (what was done instead of what was asked, one line each) and
        ``written`` (the files written, the spec first).

    Example::

        archcompiler.import_model("torchvision.models:resnet18", "resnet18.yaml", args=["weights=None"])
    """
    from ..importers.target import import_target

    return import_target(str(target), None if output is None else str(output),
                         weights=None if weights is None else str(weights), name=name, args=args, input=input,
                         blocks=blocks, verify=verify)


def _snake(text: str) -> str:
    import re
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", text).lower() or "model"
