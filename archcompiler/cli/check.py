"""archc check SPEC : compare the paper's claims in the spec with computed values."""

from __future__ import annotations

import argparse
import json


def fraction(text: str) -> float:
    """A tolerance: a finite number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:          # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1) (0.02 means 2%)")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    p = command(sub, "check", help="compare the paper's claims (output size, params, ops) with the spec",
                       description="Every claim in the spec is compared with the computed value. A wrong "
                       "output size is an error (exit 1); params / ops further off than the tolerance "
                       "are warnings (exit 0, or 1 with --strict).")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("--tolerance", type=fraction, default=0.02, metavar="FRACTION",
                   help="relative tolerance for params and ops (default 0.02 = 2%%)")
    p.add_argument("--strict", action="store_true", help="warnings fail the check too")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: one line per mismatch (default); json: errors and warnings as data")
    add_set(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import check, load_spec

    spec = load_spec(args.spec, args.set)
    found = check(spec, tolerance=args.tolerance)
    errors = [d for d in found if d.severity == "error"]
    warnings = [d for d in found if d.severity == "warning"]
    failed = bool(errors) or (args.strict and bool(warnings))
    n_claims = sum(1 for r in spec.rows if spec.row_claims(r) is not None)
    if args.format == "json":
        print(json.dumps({"ok": not failed, "spec": spec.name, "rows_with_claims": n_claims,
                          "network_claims": spec.claims is not None,
                          "errors": [d.to_json() for d in errors],
                          "warnings": [d.to_json() for d in warnings]}, indent=2))
    else:
        for d in found:
            print(d.format())
        verdict = "FAILED" if failed else "ok"
        network = ", and the network's" if spec.claims is not None else ""
        print(f"{verdict}: {spec.name}: {n_claims} rows with claims{network}, {len(errors)} error(s), "
              f"{len(warnings)} warning(s) (tolerance {args.tolerance:.0%})")
    return 1 if failed else 0
