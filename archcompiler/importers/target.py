"""``archc import``'s whole job on one target: a PyTorch callable (``MODULE:CALLABLE``, traced) or an ONNX
file (read as data), its spec verified and written with its weights (safetensors) beside it, every output
checked before anything is written (see :func:`archcompiler.api.import_model`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BackendError, Location, error, printable
from ..io import refuse_inputs, write_bytes, write_text


def import_target(target: str, output: str | None = None, *, weights: str | None = None, name: str | None = None,
                  args: list[str] | None = None, input: str | tuple[int, ...] | None = None, blocks: bool = True,
                  verify: bool = True) -> dict[str, Any]:
    """The import; returns ``text`` (the spec), ``notes`` (what stderr should say) and ``written`` (the files)."""
    shape = _shape(input)
    call_args = _call_args(args or [])
    onnx = target.lower().endswith(".onnx")
    for option, out in (("-o", output), ("--weights", weights)):
        if out is not None and (not out or os.path.isdir(out)):
            example = "net.yaml" if option == "-o" else "net.safetensors"
            raise BackendError([error(f"{option} {printable(out) or repr(out)} is {'a folder' if out else 'empty'}",
                                      "output", Location(printable(out)[:1000]),
                                      hint=f"give a file name, e.g. {option} {printable(str(Path(out) / example))}")])
    source_file = target if onnx else target.rpartition(":")[0] or target
    if output:
        refuse_inputs(output, [source_file])
    weights = weights or (str(Path(output).with_suffix(".safetensors")) if output else None)
    if weights:
        refuse_inputs(weights, [source_file])
    if onnx:
        return _import_onnx(target, output, weights, name, blocks, verify)
    return _import_torch((target, call_args, args or []), shape, output, weights, name, blocks, verify)


def _call_args(args: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as the callable's keyword arguments (numbers, booleans, text)."""
    call_args = {}
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise BackendError([error(f"--arg {item!r} is not KEY=VALUE", "--arg")])
        call_args[key] = _value(value)
    return call_args


def _shape(input: str | tuple[int, ...] | None) -> tuple[int, ...] | None:
    if input is None or isinstance(input, tuple):
        return input
    try:
        shape = tuple(int(v) for v in str(input).lower().split("x"))
        assert len(shape) == 3 and all(v > 0 for v in shape)
    except (ValueError, AssertionError):
        raise BackendError([error(f"--input {input!r} is not CxHxW", "--input", hint="for example 3x224x224")]) from None
    return shape


def _import_onnx(target: str, output: str | None, weights: str | None, name: str | None, blocks: bool,
                 verify: bool) -> dict[str, Any]:
    from .onnx import Outputs, import_onnx

    notes: list[str] = [] if weights else ["the weights are written only with -o or --weights"]
    # every output checked (against the model, its external data and each other) before either is
    # written; both written atomically, together
    text = import_onnx(target, Outputs(output, weights, write_spec=True), name=name, schema=_schema_line(output),
                       blocks=blocks, verify=verify, notes=notes)
    return {"text": text, "notes": notes, "written": [p for p in (output, weights) if p and output]}


def _import_torch(call: tuple[str, dict[str, Any], list[str]], shape: tuple[int, ...] | None, output: str | None,
                  weights: str | None, name: str | None, blocks: bool, verify: bool) -> dict[str, Any]:
    """``call``: the target, its keyword arguments and the ``KEY=VALUE`` strings they were given as."""
    from .pytorch import load_callable, state_bytes, trace
    from .verify import verified_spec

    target, call_args, args = call
    shown = " ".join([target, *(f"--arg {a}" for a in args)])
    model, callable_name = load_callable(target, call_args)
    flat = trace(model, shape, name=name or callable_name, source=shown)
    text, notes = verified_spec(model, flat, schema=_schema_line(output), blocks=blocks, verify=verify)
    written = []
    if weights:
        text = text.replace("# check, draw and build read it;",
                            f"# check, draw and build read it (weights: --weights {Path(weights).name});", 1)
        data = state_bytes(model, shown)        # made before anything is written: a refusal leaves no file
        if output:
            write_text(output, text)
            written.append(output)
        write_bytes(weights, data)
        written.append(weights)
    elif output:
        write_text(output, text)
        written.append(output)
    return {"text": text, "notes": list(notes), "written": written}


def _value(text: str):
    import yaml
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, (int, float, bool, str)) or v is None else text


def _schema_line(output: str | None) -> str:
    """The schema reference: relative to the spec where archc's schema file is found, else its name."""
    schema = Path(__file__).resolve().parents[2] / "schema" / "archc.schema.json"
    if not schema.exists():
        return "archc.schema.json"
    base = Path(os.path.realpath(output)).parent if output else Path.cwd()     # (realpath: no error on a link loop)
    return os.path.relpath(schema, base)
