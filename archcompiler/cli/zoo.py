"""archc zoo [PATTERN] : the shipped specs and the torchvision builder names they answer to, each with
its input size, parameters and MACs (computed, never imports torch)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import command
    p = command(sub, "zoo", help="list the shipped specs and builder names",
                description="List the names archc answers to without a path (torchvision's builders, such as "
                            "resnet101, and the shipped spec files), with the spec that holds each, the "
                            "parameters it sets, its input, parameters and MACs. Any command takes the name "
                            "in place of a file: archc flops resnet101.")
    p.add_argument("pattern", nargs="?", default=None,
                   help="only names containing this text (for example resnet)")
    p.add_argument("--format", choices=["table", "json", "markdown", "csv"], default="table",
                   help="table (default, with a progress bar on a terminal), json, markdown or csv")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import zoo
    from .tables import human, render, size

    entries = zoo(args.pattern, progress=args.format == "table")
    if args.format == "json":
        print(json.dumps(entries, indent=2))
        return 0
    rows = [[e["name"], e["spec"], " ".join(f"{k}={v}" for k, v in e["sets"].items()), size(e["input"]),
             human(e["params"]), human(e["macs"])] for e in entries]
    print(render(["name", "spec", "sets", "input", "params", "MACs"], rows, args.format, right={4, 5}), end="")
    return 0
