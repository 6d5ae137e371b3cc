"""Where the module comes from: ``MODULE:CALLABLE`` loaded (a user's own code failing is said at its file and
line), the package a class belongs to, and the weights of the traced module as bytes."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from ...errors import BackendError, error
from ...ops import FROM_TORCH

CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


def torchvision_install(torch_version: str | None = None) -> str:
    """The command that installs torchvision beside this torch: torchvision is no dependency of archc,
    and only the release made for the installed torch imports (torch 2.N pairs with torchvision 0.(N+15)),
    from the same index (PyPI's pulls torch's CUDA build over a CPU one)."""
    import torch

    version = (torch_version or torch.__version__).split("+")[0]
    major, minor = (int(v) for v in version.split(".")[:2])
    cpu = "+cpu" in (torch_version or torch.__version__) or not torch.cuda.is_available()
    command = f"pip install torch=={version} torchvision==0.{minor + 15}.*" if major == 2 else "pip install torchvision"
    where = f" --index-url {CPU_WHEELS}" if cpu else ""
    return (f"archc does not depend on torchvision; install the release made for your torch {version}: "
            f"{command}{where}")


def load_callable(target: str, args: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``my_model.py:Net`` or ``torchvision.models:resnet50`` -> the module the callable returns
    (called with ``args``) and a name for the spec. This imports and runs the user's code."""
    import torch

    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise BackendError([error(f"{target!r} is not MODULE:CALLABLE", "import",
                                  hint="for example my_model.py:Net or torchvision.models:resnet50")])
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise BackendError([error(f"{file} does not exist", "import")])
            name = f"archc_import_{re.sub(r'[^A-Za-z0-9_]', '_', file.stem)}"
            spec = importlib.util.spec_from_file_location(name, file)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        hint = torchvision_install() if missing.split(".")[0] == "torchvision" else None
        raise BackendError([error(f"cannot import {module_name!r}: {exc}", "import", hint=hint)]) from None
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's code failed: said with its place, no traceback)
        raise _user_code_failed(f"importing {module_name!r}", exc) from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise BackendError([error(f"{module_name!r} has no {attr!r}", "import")])
    try:
        model = fn(**(args or {})) if not isinstance(fn, torch.nn.Module) else fn
    except Exception as exc:  # noqa: BLE001
        raise _user_code_failed(f"calling {target}", exc) from None
    if not isinstance(model, torch.nn.Module):
        raise BackendError([error(f"{target} returned a {type(model).__name__}, not a torch.nn.Module", "import")])
    return model, attr


def _user_code_failed(doing: str, exc: BaseException) -> BackendError:
    """The user's module failed while archc imported or called it: what failed, and where in their code (the
    innermost frame outside archc), in one line."""
    import traceback

    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}:{exc.offset or 0}"
        text = exc.msg
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "archcompiler" not in Path(f.filename).parts]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        text = str(exc)
    message = " ".join(f"{type(exc).__name__}: {text}".split())[:300]
    return BackendError([error(f"{doing} failed{' at ' + where if where else ''}: {message}", "import",
                               hint="archc import runs the module's own code: fix it, then import again")])


def module_key(m: Any) -> str:
    """The ``from_torch`` key of a module: its class name, or its class qualified by its package where an op
    reads that class alone (timm has several classes named ``Attention``: EfficientFormer's is not ViT's)."""
    qualified = f"{type(m).__module__}.{type(m).__name__}"
    return qualified if qualified in FROM_TORCH else type(m).__name__


def state_bytes(model: Any, source: str) -> bytes:
    """The module's ``state_dict`` as a safetensors file (its keys the spec's module paths, which the import
    keeps), so that ``archc train SPEC --weights FILE`` starts from them; tensors that share memory are
    written each on its own."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        return save(state, metadata={"archc": f"imported from {source}"[:1000]})
    except Exception as exc:  # noqa: BLE001 (a tensor type safetensors cannot hold: said, not a traceback)
        raise BackendError([error(f"the weights cannot be written as safetensors: {str(exc)[:200]}", "--weights")]) \
            from None
