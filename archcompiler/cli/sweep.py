"""archc sweep SPEC --grid PATH=V1,V2,... : every combination as a variant, a table and a Pareto plot."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    from .flops import positive

    p = command(sub, "sweep", help="a grid of --set values: a table per variant and a Pareto plot",
                description="Every combination of the --grid values as a variant of the spec (each validated like "
                "--set; an invalid one is a row with its error): params, MACs, peak activation memory, a training "
                "step's memory and predicted latency per variant, ranked, with the Pareto front; -o DIR writes "
                "sweep.json and pareto.png. Without --measure and --train it never imports torch.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML) or a zoo name")
    p.add_argument("--grid", action="append", default=[], metavar="PATH=V1,V2,...", required=True,
                   help="a path as --set takes it and its values, separated by commas (commas inside [...] stay "
                        "in the value); repeatable: every combination is a variant")
    p.add_argument("--batch", type=positive, default=1, metavar="N", help="images per batch (default 1)")
    p.add_argument("--optimize", action="store_true", help="the optimised inference module (as archc build --optimize)")
    p.add_argument("-o", "--output", metavar="DIR", help="a folder for sweep.json and pareto.png (and the study)")
    p.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table",
                   help="table (default), csv, json (the whole result) or markdown")
    p.add_argument("--machine", metavar="FILE", help="machine profile (default: the one archc calibrate saved)")
    p.add_argument("--measure", action="store_true",
                   help="build every variant and time it, in interleaved rounds (imports torch)")
    p.add_argument("--rounds", type=positive, default=5, metavar="N", help="with --measure: rounds (default 5)")
    p.add_argument("--train", action="store_true",
                   help="train every variant briefly, each a trial of an Optuna study in DIR/sweep.db (resumable, "
                        "shareable by several processes); needs --data and -o, and pip install optuna")
    p.add_argument("--data", metavar="DIR", help="with --train: the image folder")
    p.add_argument("--epochs", type=positive, metavar="N", help="with --train: epochs per variant (default: the recipe's)")
    add_set(p, what=" for every variant")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import SweepOptions, TrainOptions, sweep, sweep_table

    if args.measure:
        print("measuring every variant (importing torch)...", file=sys.stderr)
    progress = sys.stderr.isatty()
    options = SweepOptions(batch=args.batch, optimize=args.optimize, output=args.output, machine=args.machine,
                           measure=args.measure, rounds=args.rounds, progress=progress)
    training = TrainOptions(epochs=args.epochs, progress=progress, seed=0, workers=0) if args.train else None
    result = sweep(args.spec, args.grid, options, overrides=args.set, training=training, data=args.data)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    from .tables import render

    headers, rows = sweep_table(result, raw=args.format == "csv")
    numbers = len(headers) - (2 if headers[-1] == "error" else 1)
    print(render(headers, rows, args.format, set(range(1, numbers))), end="")
    if args.format == "csv":
        return 0
    valid = [r for r in result["rows"] if r["ok"]]
    front = [r["name"] for r in valid if r["pareto"]]
    axes = result["axes"]
    print(f"\n{len(valid)} of {len(result['rows'])} variants valid; batch {result['batch']}"
          f"{', optimized' if result['optimize'] else ''}; latency predicted on {result['machine']}")
    print(f"Pareto front ({axes['y']} against {axes['x']}): {', '.join(front) or 'none'}")
    if result.get("files"):
        print(f"wrote {result['files']['table']} and {result['files']['plot']}")
    if result.get("profile_note"):
        print(f"note: {result['profile_note']}", file=sys.stderr)
    return 0 if valid else 1
