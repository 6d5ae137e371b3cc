"""archc import MODULE:CALLABLE | MODEL.onnx : an existing model becomes a readable spec."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import command
    p = command(sub, "import", help="write the spec of a PyTorch model or an ONNX file",
                description="Trace a PyTorch module (MODULE:CALLABLE, e.g. torchvision.models:resnet50 or "
                            "my_model.py:Net: this imports and runs that code, as you ask) or read an ONNX file "
                            "(data: nothing in it runs) and write its spec: repeated sub-modules become blocks, "
                            "consecutive uses a table. Built, the spec has the original's state_dict keys.")
    p.add_argument("target", metavar="MODULE:CALLABLE|MODEL.onnx", help="what to import")
    p.add_argument("-o", "--output", default=None, help="the spec file to write (default: print it)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="an argument of the callable (a number, true/false or text); repeatable")
    p.add_argument("--input", default=None, metavar="CxHxW",
                   help="the input size (default: the model's INPUT_SHAPE, or 3x224x224)")
    p.add_argument("--name", default=None, help="the spec's name (default: the callable's or file's)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="where to write the weights (safetensors; default: next to the spec, with -o): the ONNX "
                        "file's initializers, or the module's state_dict (pretrained weights included), so "
                        "'archc train SPEC --weights FILE' fine-tunes them")
    p.add_argument("--flat", action="store_true", help="one layer per line: no blocks or tables")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="write the spec without building it and comparing its outputs with the module's (or "
                        "onnxruntime's, for an ONNX file) on a seeded input (by default a spec that differs is "
                        "never written)")
    p.set_defaults(run=run)


def _value(text: str):
    import yaml
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, (int, float, bool, str)) or v is None else text


def run(args: argparse.Namespace) -> int:
    from ..errors import BackendError, Location, error, printable
    from ..io import refuse_inputs, write_bytes, write_text

    shape = None
    if args.input:
        try:
            shape = tuple(int(v) for v in args.input.lower().split("x"))
            assert len(shape) == 3 and all(v > 0 for v in shape)
        except (ValueError, AssertionError):
            raise BackendError([error(f"--input {args.input!r} is not CxHxW", "--input",
                                      hint="for example 3x224x224")]) from None
    call_args = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise BackendError([error(f"--arg {item!r} is not KEY=VALUE", "--arg")])
        call_args[key] = _value(value)
    onnx = args.target.lower().endswith(".onnx")
    for option, out in (("-o", args.output), ("--weights", args.weights)):
        if out is not None and (not out or os.path.isdir(out)):
            example = "net.yaml" if option == "-o" else "net.safetensors"
            raise BackendError([error(f"{option} {printable(out) or repr(out)} is {'a folder' if out else 'empty'}",
                                      "output", Location(printable(out)[:1000]),
                                      hint=f"give a file name, e.g. {option} {printable(str(Path(out) / example))}")])
    if args.output:
        refuse_inputs(args.output, [args.target if onnx else args.target.rpartition(":")[0] or args.target])
    schema = _schema_line(args.output)
    weights = None
    if onnx:
        from ..importers.onnx import import_onnx
        weights = args.weights or (str(Path(args.output).with_suffix(".safetensors")) if args.output else None)
        if weights:
            refuse_inputs(weights, [args.target])
        else:
            print("archc: the weights are written only with -o or --weights", file=sys.stderr)
        # every output checked (against the model, its external data and each other) before either is
        # written; both written atomically, together
        notes: list[str] = []
        text = import_onnx(args.target, args.output, weights=weights, name=args.name, schema=schema,
                           blocks=not args.flat, write_spec=True, verify=args.verify, notes=notes)
        for note in notes:
            print(f"archc: {note}", file=sys.stderr)
        if args.output:
            print(f"wrote {args.output}" + (f" and {weights}" if weights else ""))
        else:
            print(text, end="")
        return 0
    from ..importers.pytorch import load_callable, trace
    from ..importers.verify import verified_spec

    model, name = load_callable(args.target, call_args)
    shown = " ".join([args.target, *(f"--arg {a}" for a in args.arg)])
    weights = args.weights or (str(Path(args.output).with_suffix(".safetensors")) if args.output else None)
    if weights:
        refuse_inputs(weights, [args.target.rpartition(":")[0] or args.target])
    flat = trace(model, shape, name=args.name or name, source=shown)
    text, notes = verified_spec(model, flat, schema=schema, blocks=not args.flat, verify=args.verify)
    for note in notes:
        print(f"archc: {note}", file=sys.stderr)
    if weights:
        from ..importers.pytorch import state_bytes
        text = text.replace("# check, draw and build read it;",
                            f"# check, draw and build read it (weights: --weights {Path(weights).name});", 1)
        data = state_bytes(model, shown)        # made before anything is written: a refusal leaves no file
        if args.output:
            write_text(args.output, text)
        write_bytes(weights, data)
        print(f"wrote {args.output + ' and ' if args.output else ''}{weights}")
        if not args.output:
            print(text, end="")
    elif args.output:
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def _schema_line(output: str | None) -> str:
    """The schema reference: relative to the spec where archc's schema file is found, else its name."""
    schema = Path(__file__).resolve().parents[2] / "schema" / "archc.schema.json"
    if not schema.exists():
        return "archc.schema.json"
    base = Path(os.path.realpath(output)).parent if output else Path.cwd()     # (realpath: no error on a link loop)
    return os.path.relpath(schema, base)
