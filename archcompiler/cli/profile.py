"""archc profile SPEC : measured time per spec row beside the predicted one."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_features, add_set, command
    from .flops import positive

    p = command(sub, "profile", help="measured vs predicted time per row of the spec",
                description="Build the module, run it (after warm-up runs) and measure the time of every spec "
                "row (all its ops, functional ones included); print it beside the latency predicted from the "
                "machine profile, per row and in total (each total the sum of its rows; when the forward pass "
                "timed as one call differs from the rows' sum, a note says by how much and why).")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("--batch", type=positive, default=1, metavar="N", help="images per batch (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument("--optimize", action="store_true", help="profile the optimised inference module")
    p.add_argument("--repeats", type=positive, default=10, metavar="N", help="measured runs (default 10)")
    p.add_argument("--machine", metavar="FILE", help="machine profile (default: the one archc calibrate saved)")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text (default) or json: rows [{name, predicted_ms, measured_ms}], total (the rows summed, and "
                        "whole_call_ms: the forward pass timed as one call), machine_speed")
    add_set(p)
    add_features(p)
    p.set_defaults(run=run)


WHOLE_CALL_APART = 1.25     # the whole call's time and the rows' sum further apart than this: say why


def total_note(total: dict) -> str | None:
    """Why the forward pass timed as one call differs from the sum of the rows, when it does by more than
    WHOLE_CALL_APART; else None."""
    rows, whole = total["measured_ms"], total["whole_call_ms"]
    if not rows or not whole or max(rows, whole) / min(rows, whole) <= WHOLE_CALL_APART:
        return None
    why = (f"each row's time is its median over {total['repeats']} runs, which leaves out the stalls a busy machine "
           "puts into many whole runs but into few runs of any one row" if whole > rows else
           "the marks that time each row (a call and, on a GPU, a synchronisation after every row) cost time the "
           "unmarked call does not spend")
    return (f"the whole forward pass, timed as one call without the marks: {whole:.2f} ms; the rows sum to "
            f"{rows:.2f} ms: {why}")


def speed_note(report: dict) -> str | None:
    """What the machine's speed against its speed when calibrated says about the figures, when it moved
    by more than 10% and only when the figures moved the same way (measured shorter than predicted on a
    faster machine, longer on a slower one): else the difference is the prediction's, not the load's."""
    speed, t = report["machine_speed"], report["total"]
    if abs(speed - 1) <= 0.1 or not t["measured_ms"] or (speed > 1) != (t["measured_ms"] < t["predicted_ms"]):
        return None
    why = ("it was busier when calibrated than now, which makes measured times shorter" if speed > 1 else
           "other load on it now makes measured times longer")
    return (f"the machine ran at {speed:.2f}x the speed it had when calibrated (a reference kernel timed beside "
            f"each run): {why} than predicted")


def run(args: argparse.Namespace) -> int:
    from ..api import profile

    report = profile(args.spec, args.set, batch=args.batch, device=args.device, optimize=args.optimize,
                     repeats=args.repeats, machine=args.machine)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    from .tables import render

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"
    rows = [[r["name"], ms(r["predicted_ms"]), ms(r["measured_ms"]),
             "" if not r["measured_ms"] or r["predicted_ms"] is None else f"{r['predicted_ms'] / r['measured_ms']:.2f}",
             "" if r["intensity"] is None else f"{r['intensity']:.1f}", r["bound"] or ""] for r in report["rows"]]
    print(render(["row", "predicted ms", "measured ms", "ratio", "FLOP/byte", "bound"], rows, "table",
                 {1, 2, 3, 4}), end="")
    t = report["total"]
    ratio = f" ({t['predicted_ms'] / t['measured_ms']:.2f}x)" if t["measured_ms"] else ""
    print(f"\n{report['spec']}, batch {report['batch']}, {report['device']}"
          f"{' (optimized)' if report['optimized'] else ''} on {report['machine']}: predicted {t['predicted_ms']:.2f} ms, "
          f"measured {t['measured_ms']:.2f} ms{ratio} (the rows summed)")
    for note in (total_note(t), speed_note(report)):
        if note:
            print(f"note: {note}", file=sys.stderr)
    mark = report.get("machine_unsteady")
    if mark:
        print(f"note: the machine profile was written by archc calibrate --force although the machine's speed moved "
              f"{mark['moved']:g}x while it was measured (it refuses more than {mark['limit']:g}x): "
              "predictions from it can be off by as much", file=sys.stderr)
    return 0
