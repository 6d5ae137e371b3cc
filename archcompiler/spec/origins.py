"""Where each value of a merged spec came from (for ``archc resolve``)."""

from __future__ import annotations

import json
from typing import Any

from .source import YDict, YList


def _origin(loc: Any) -> str:
    return str(loc) if loc is not None else "?"


def origins(data: Any, prefix: str = "") -> dict[str, str]:
    """``{"params.num_classes": "specs/googlenet.yaml:24:16", ...}`` for every scalar."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, (dict, list)):
                out.update(origins(v, path))
            else:
                out[path] = _origin(data.where(k) if isinstance(data, YDict) else None)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            path = f"{prefix}[{i}]"
            if isinstance(v, (dict, list)):
                out.update(origins(v, path))
            else:
                out[path] = _origin(data.where(i) if isinstance(data, YList) else None)
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        simple = v and all(ch.isalnum() or ch in "_-./ " for ch in v) and v.strip() == v \
            and v.lower() not in ("yes", "no", "on", "off", "true", "false", "null", "~")
        try:
            float(v)
            simple = False
        except ValueError:
            pass
        return v if simple else json.dumps(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _flow(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_flow(x) for x in v) + "]"
    return _scalar(v)


def annotated_yaml(data: Any, with_origins: bool = True) -> str:
    """YAML text of ``data``; each line ends with ``# file:line`` when ``with_origins``."""
    lines: list[str] = []

    def note(container: Any, key: Any) -> str:
        if not with_origins or not isinstance(container, (YDict, YList)):
            return ""
        return f"  # {container.where(key)}"

    def emit(node: Any, indent: int) -> None:
        pad = " " * indent
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, dict) and v and not _is_small(v):
                    lines.append(f"{pad}{_scalar(k)}:{note(node, k)}")
                    emit(v, indent + 2)
                elif isinstance(v, list) and v and not _is_small(v):
                    lines.append(f"{pad}{_scalar(k)}:{note(node, k)}")
                    emit(v, indent + 2)
                else:
                    lines.append(f"{pad}{_scalar(k)}: {_flow(v)}{note(node, k)}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, dict) and not _is_small(v):
                    lines.append(f"{pad}-{note(node, i)}")
                    emit(v, indent + 2)
                else:
                    lines.append(f"{pad}- {_flow(v)}{note(node, i)}")

    emit(data, 0)
    return "\n".join(lines) + "\n"


def _is_small(v: Any) -> bool:
    """Layers and table rows stay on one line, as they are written; a table (which has ``use``
    too) spreads over one line per row, each with its own origin."""
    if isinstance(v, list):
        return all(not isinstance(x, (dict, list)) for x in v)
    if isinstance(v, dict):
        return ("op" in v or "use" in v) and "rows" not in v
    return True
