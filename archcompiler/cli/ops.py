"""archc ops [OP] : the ops a spec can use (archc's own and the installed plugins'), with their fields,
defaults and one line of doc (never imports torch)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import command
    p = command(sub, "ops", help="list the ops a spec can use, with their fields",
                description="List every op a spec can use: archc's own, then those of installed packages "
                            "(plugins, entry-point group archcompiler.ops), each with its fields, their types "
                            "and defaults, and one line of doc. A plugin that failed to load is named on "
                            "stderr. Exit 1 for an op no installed package provides.")
    p.add_argument("op", nargs="?", default=None, metavar="OP", help="only this op (for example conv)")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table",
                   help="table: one block per op (default); json: the same as data; markdown: the README's op "
                        "table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import op_catalog, op_markdown, plugin_problems

    for problem in plugin_problems():
        print(f"archc: warning: a plugin was left out: {problem}", file=sys.stderr)
    entries = op_catalog(args.op)
    if args.format == "markdown":
        print(op_markdown(entries), end="")
        return 0
    if args.format == "json":
        print(json.dumps(entries if args.op is None else entries[0], indent=2))
        return 0
    blocks = [_block(e) for e in entries]
    if args.op is None:
        plugins = sum(e["provider"] != "archc" for e in entries)
        blocks.insert(0, f"{len(entries)} ops ({plugins} from installed packages). Every op also takes name, "
                         "input (inputs for an op that joins several), claims, doc and when.\n")
    print("\n".join(blocks), end="")
    return 0


def _block(entry: dict) -> str:
    """One op: its name (and the package that provides it), its doc, one line per field."""
    head = entry["op"] + ("" if entry["provider"] == "archc" else f"  (from {entry['provider']})")
    lines = [head] + ([f"  {entry['doc']}"] if entry["doc"] else [])
    rows = [[f["name"], f["type"], _default(f["default"]), f["doc"]] for f in entry["fields"]]
    if not rows:
        lines.append("  (no fields)")
    # columns as wide as their cells, but a long type (an activation's nine names) takes its own line
    widths = [max([len(r[i]) for r in rows if i != 1 or len(r[1]) <= _TYPE_WIDTH] or [0]) for i in range(3)]
    for name, kind, default, doc in rows:
        if len(kind) > widths[1]:
            lines.append(f"  {name.ljust(widths[0])}  {kind}")
            name, kind = "", ""
        lines.append(f"  {name.ljust(widths[0])}  {kind.ljust(widths[1])}  {default.ljust(widths[2])}  {doc}".rstrip())
    return "\n".join(lines) + "\n"


_TYPE_WIDTH = 40


def _default(value) -> str:
    """A field's default as a spec writes it (true, [3, 3], first); ``optional`` where it is unset."""
    if value == "required":
        return value
    return "optional" if value is None else f"= {value if isinstance(value, str) else json.dumps(value)}"
