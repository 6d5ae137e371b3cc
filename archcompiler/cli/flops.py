"""archc flops SPEC : the paper's table regenerated from the spec (never imports torch)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from .tables import human, mib, render, size


def parse_input(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not CxHxW, e.g. 3x299x299")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_features, add_set, command
    p = command(sub, "flops", help="params, MACs/FLOPs, shapes and depth per row (the paper's table)",
                       description="Regenerate the paper's table from the spec: per row the type, patch "
                       "size/stride, output size, depth, the block's columns, params and ops; then totals. "
                       "1 MAC = 1 multiply-add, FLOPs = 2 x MACs.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("--depth", type=positive, default=1, metavar="N",
                   help="1: one line per row of the spec; 2: the layers inside each block; ...")
    p.add_argument("--units", choices=["macs", "flops"], default="macs",
                   help="the 'ops' column in multiply-adds (default, as the paper) or FLOPs (2 per multiply-add)")
    p.add_argument("--format", choices=["table", "json", "csv", "markdown"], default="table",
                   help="table (default), json (exact integers, [C, H, W] shapes), csv or markdown")
    p.add_argument("--input", type=parse_input, metavar="CxHxW", help="input size, e.g. 3x299x299")
    p.add_argument("--optimized", action="store_true",
                   help="the graph after the inference passes (what archc build --optimize runs), with what they removed")
    p.add_argument("--latency", action="store_true",
                   help="predicted time per row, arithmetic intensity and compute/memory bound, from the machine "
                        "profile (archc calibrate); still without torch")
    p.add_argument("--machine", metavar="FILE", help="with --latency: the machine profile (default: archc calibrate's; "
                   "on a machine not calibrated yet, the rough profile archc ships, with a note saying so)")
    p.add_argument("--train-memory", action="store_true",
                   help="memory of a training step: parameters, gradients, optimizer state, saved activations "
                        "per row, and the peak")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd",
                   help="with --train-memory: SGD with momentum (one state tensor per parameter) or Adam (two)")
    p.add_argument("--batch", type=positive, default=1, metavar="N",
                   help="images per batch: multiplies ops and activation memory (default 1)")
    add_set(p)
    add_features(p)
    p.set_defaults(run=run)


def table_rows(report: dict[str, Any], units: str) -> tuple[list[str], list[list[Any]], set[int]]:
    arg_columns: list[str] = []
    for r in report["rows"]:
        for c in r["columns"]:
            if c not in arg_columns:
                arg_columns.append(c)
    headers = ["name", "type", "patch size/stride", "output size", "depth", *[f"#{c}" for c in arg_columns],
               "params", "ops" if units == "macs" else "FLOPs"]
    rows = []
    for r in report["rows"]:
        ops = r["macs"] if units == "macs" else r["flops"]
        mark = " *" if r["training_only"] else ""
        rows.append([r["name"] + mark, r["type"], r["patch"], size(r["output"]), r["depth"],
                     *[r["columns"].get(c, "") for c in arg_columns],
                     human(r["params"]) if r["params"] else "", human(ops) if ops else ""])
    right = {4, *range(5, 5 + len(arg_columns)), len(headers) - 2, len(headers) - 1}
    return headers, rows, right


def run(args: argparse.Namespace) -> int:
    from ..api import analyze

    report = analyze(args.spec, args.set, batch=args.batch, depth=args.depth, input=args.input,
                     optimized=args.optimized, train_memory=args.optimizer if args.train_memory else None,
                     latency=(args.machine or True) if args.latency else None)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    headers, rows, right = table_rows(report, args.units)
    if args.latency:
        headers += ["predicted ms", "FLOP/byte", "bound"]
        for r, x in zip(rows, report["rows"]):
            r += [f"{x['predicted_ms']:.3f}", f"{x['intensity']:.1f}", x["bound"]]
        right |= {len(headers) - 3, len(headers) - 2}
    if args.train_memory:
        saved = report["train_memory"]["rows"]
        headers.append("saved for backward")
        for r, x in zip(rows, report["rows"]):
            r.append(mib(saved.get(x["name"], 0)) if saved.get(x["name"]) else "")
        right.add(len(headers) - 1)
    if args.format == "csv":
        exact = [[*r[:-2], x["params"], x["macs"] if args.units == "macs" else x["flops"]]
                 for r, x in zip(rows, report["rows"])]
        print(render(headers, exact, "csv"), end="")
        return 0
    print(render(headers, rows, args.format, right), end="")
    t, tt = report["total"], report["total"]["with_training_heads"]
    unit = "multiply-adds (MACs)" if args.units == "macs" else "FLOPs"
    ops, ops_t = (t["macs"], tt["macs"]) if args.units == "macs" else (t["flops"], tt["flops"])
    lines = [
        f"input {size(report['input'])}, batch {report['batch']}",
        f"total (inference):        {t['params']:,} params, {ops:,} {unit}",
        f"total (with training-only heads *): {tt['params']:,} params, {ops_t:,} {unit}",
        f"depth: {report['depth']['with_params']} layers with parameters, "
        f"{report['depth']['with_pooling']} with pooling",
        f"peak activation memory (inference, float32): {mib(report['peak_activation_bytes'])}",
        f"receptive field of {report['receptive_field']['layer']}: "
        f"{report['receptive_field']['size'][0]}x{report['receptive_field']['size'][1]} pixels",
        f"convention: {report['convention']}",
    ]
    if args.optimized:
        opt = report["optimized"]
        kinds = {"eval_only": "training-only or dropout", "fold_batch_norm": "BatchNorm folded into convolutions",
                 "fuse_activation": "ReLU fused into convolutions"}
        done = [f"{len(p['removed'])} {p.get('what', kinds.get(p['pass'], p['pass']))}" for p in opt["passes"]
                if p.get("removed")]
        layout = [p["memory_format"] for p in opt["passes"] if p.get("memory_format")]
        lines.insert(3, f"optimized: nodes removed: {', '.join(done) or 'none'}; removed {opt['elementwise']:,} "
                        f"element operations and {opt['macs']:,} MACs; params {-opt['params']:+,}"
                        + (f"; layout {layout[0]}" if layout else ""))
    if args.latency:
        lat = report["latency"]
        lines.insert(len(lines) - 1, f"predicted latency: {lat['predicted_ms']:.2f} ms at batch {report['batch']} on "
                     f"{lat['machine']} ({lat['threads']} threads); working set {mib(lat['working_set_bytes'])}, "
                     f"cache {mib(lat['cache_bytes'])}: kernels at {lat['cache_speed']}")
        if lat["calibration_warning"]:
            print(f"warning: {lat['calibration_warning']}", file=sys.stderr)
        if lat["profile_note"]:
            print(f"note: {lat['profile_note']}", file=sys.stderr)
    if args.train_memory:
        tm = report["train_memory"]
        lines.insert(len(lines) - 1, f"training step ({tm['optimizer']}, batch {tm['batch']}, float32): parameters "
                     f"{mib(tm['params'])}, gradients {mib(tm['gradients'])}, optimizer state "
                     f"{mib(tm['optimizer_state'])}, activations saved for backward {mib(tm['saved_activations'])}; "
                     f"peak {mib(tm['peak'])}")
    for f in report.get("features", []):
        ops_f = f["macs"] if args.units == "macs" else f["flops"]
        stride = f", stride {f['reduction']}" if f["reduction"] else ""
        lines.insert(len(lines) - 1, f"feature {f['name']} ({f['layer']}): {size(f['shape'])}{stride}, computed by "
                     f"{human(f['params'])} params and {human(ops_f)} {unit.split(' ')[0]}")
    stage_text = ", ".join(f"{st['resolution']} {human(st['macs'] if args.units == 'macs' else st['flops'])}"
                           for st in report["stages"])
    lines.insert(3, f"by stage (output resolution: {'MACs' if args.units == 'macs' else 'FLOPs'}): {stage_text}")
    sep = "\n" if args.format == "table" else "  \n"
    print(("\n" if args.format == "table" else "\n") + sep.join(lines))
    return 0
