"""archc profile SPEC : measured time per spec row beside the predicted one."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    from .flops import positive

    p = command(sub, "profile", help="measured vs predicted time per row of the spec",
                description="Build the module, run it (after warm-up runs) and measure the time of every spec "
                "row (all its ops, functional ones included); print it beside the latency predicted from the "
                "machine profile, per row and in total.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("--batch", type=positive, default=1, metavar="N", help="images per batch (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument("--optimize", action="store_true", help="profile the optimised inference module")
    p.add_argument("--repeats", type=positive, default=10, metavar="N", help="measured runs (default 10)")
    p.add_argument("--machine", metavar="FILE", help="machine profile (default: the one archc calibrate saved)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text (default) or json: rows [{name, predicted_ms, measured_ms}], total, machine_speed")
    add_set(p)
    p.set_defaults(run=run)


def profile_report(spec_or_path, batch: int = 1, device: str = "cpu", optimize: bool = False, repeats: int = 10,
                   machine=None, overrides=None) -> dict:
    """Predicted and measured milliseconds per row and in total (``archc profile --format json``)."""
    from ..measure.profile import measure_rows
    from ..passes import annotated_graph
    from ..passes.latency import load_profile, predict_rows
    from ..spec import load_spec

    spec = load_spec(spec_or_path, overrides)
    profile = load_profile(machine, device)
    g = annotated_graph(spec)
    if optimize:
        from ..passes.optimize import optimize as run_passes

        g = run_passes(g)
    predicted = predict_rows(g, profile, batch)
    measured = measure_rows(spec, batch, device, optimize, repeats)
    rows = [{"name": name, "predicted_ms": p["ms"], "measured_ms": measured["rows"].get(name),
             "intensity": p["intensity"], "bound": p["bound"]} for name, p in predicted.items()]
    return {"spec": spec.name, "batch": batch, "device": device, "optimized": optimize, "machine": profile["name"],
            "rows": rows, "total": {"predicted_ms": sum(p["ms"] for p in predicted.values()),
                                    "measured_ms": measured["total_ms"]},
            "machine_speed": 1e3 * profile["reference_s"] / measured["reference_ms"]}


def run(args: argparse.Namespace) -> int:
    report = profile_report(args.spec, args.batch, args.device, args.optimize, args.repeats, args.machine, args.set)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    from .tables import render

    rows = [[r["name"], f"{r['predicted_ms']:.3f}", "" if r["measured_ms"] is None else f"{r['measured_ms']:.3f}",
             "" if not r["measured_ms"] else f"{r['predicted_ms'] / r['measured_ms']:.2f}", f"{r['intensity']:.1f}",
             r["bound"]] for r in report["rows"]]
    print(render(["row", "predicted ms", "measured ms", "ratio", "FLOP/byte", "bound"], rows, "table",
                 {1, 2, 3, 4}), end="")
    t = report["total"]
    print(f"\n{report['spec']}, batch {report['batch']}, {report['device']}"
          f"{' (optimized)' if report['optimized'] else ''} on {report['machine']}: predicted {t['predicted_ms']:.2f} ms, "
          f"measured {t['measured_ms']:.2f} ms ({t['predicted_ms'] / t['measured_ms']:.2f}x)")
    speed = report["machine_speed"]
    if abs(speed - 1) > 0.1:
        print(f"note: the machine ran at {speed:.2f}x the speed it had when calibrated (a reference kernel timed "
              f"beside each run); other load on it makes measured times {'shorter' if speed > 1 else 'longer'} "
              f"than predicted", file=sys.stderr)
    return 0
