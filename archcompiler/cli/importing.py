"""archc import MODULE:CALLABLE | MODEL.onnx : an existing model becomes a readable spec."""

from __future__ import annotations

import argparse
import sys


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


def run(args: argparse.Namespace) -> int:
    from ..api import import_model

    done = import_model(args.target, args.output, weights=args.weights, name=args.name, args=args.arg,
                        input=args.input, blocks=not args.flat, verify=args.verify)
    for note in done["notes"]:
        print(f"archc: {note}", file=sys.stderr)
    if done["written"]:
        print(f"wrote {' and '.join(map(str, done['written']))}")
    if not args.output:
        print(done["text"], end="")
    return 0
