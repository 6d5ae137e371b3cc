"""Writing spec YAML: one value, one layer line, in flow style that reads back as written."""

from __future__ import annotations

import json
import re
from typing import Any

from ..ops import registry

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def model(fields: dict) -> type:
    """The pydantic model of a layer's op (from the op registry): what its op is and which fields it has."""
    return registry().layers[fields["op"]].model


def scalar(v: Any) -> str:
    """One YAML value, in flow style, that reads back as ``v``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        text = repr(v)
        if "e" in text and "." not in text.split("e")[0]:
            mant, _, exp = text.partition("e")
            text = f"{mant}.0e{exp}"
        return text
    if isinstance(v, str):
        return v if _PLAIN.match(v) and v.lower() not in _YAML_WORDS else json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{scalar(k)}: {scalar(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r}")





def without_defaults(fields: dict) -> dict:
    """The fields a reader needs: those that differ from the spec language's defaults."""
    known = model(fields).model_fields
    out = {}
    for k, v in fields.items():
        default = known[k].default if k in known else None
        # a pooling's stride defaults to its kernel (its default is None)
        if k == "op" or not (v == default or (k == "stride" and default is None and fields.get("kernel") == v)):
            out[k] = v
    if "norm" in known and out.get("bias") == ("norm" not in fields):     # a conv's bias: true without a norm
        del out["bias"]
    return out


def layer_line(name: str, fields: dict, inputs: list[str], previous: str | None, indent: str) -> str:
    f = {"name": name, **without_defaults(fields)}
    if model(fields).n_inputs == "many":
        f["inputs"] = inputs
    elif inputs and inputs[0] != previous:
        f["input"] = inputs[0]
    return f"{indent}- {scalar(f)}"
