"""Checking the paper's claims (output size, params, ops, depth) against computed values.

A wrong output size is an error; params / ops further off than the tolerance, or a different
depth, are warnings: papers round, and some cells are simply inconsistent.  Nothing is hidden or
"fixed": every mismatch is reported with both numbers and the spec line of the claim.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from ..errors import Diagnostic, Location, error, warning
from ..ir import schedule
from ..spec import Spec, load_spec
from ..spec.layers import parse_quantity
from .analyze import annotated_graph, row_key, totals


def _base(kind: str) -> int:
    return 1024 if kind == "binary" else 1000


def check_claims(spec: Spec, rows: list[dict[str, Any]], tolerance: float = 0.02,
                 total: dict[str, Any] | None = None) -> list[Diagnostic]:
    """Compare each row's claims with its computed values (``rows`` from :func:`analyze`), and the
    network's claims with ``total`` (:func:`~archcompiler.passes.analyze.totals`, inference), or,
    where the claims name the input the paper counted at (``claims: {input: ...}``), with the
    network's totals at that input."""
    found: list[Diagnostic] = []
    if spec.claims is not None and total is not None:
        at = ""
        if spec.claims_input is not None and spec.claims_input != tuple(spec.input):
            total = totals(annotated_graph(load_spec(spec, {"input": list(spec.claims_input)})))
            at = f" at {'x'.join(map(str, spec.claims_input))}"
        found += _quantities(spec, spec.claims, "network", spec.claims_locs,
                             {"params": total["params"], "ops": total["macs"]}, tolerance, at)
    by_name = {r["name"]: r for r in rows}
    for name in spec.rows:
        claims = spec.row_claims(name)
        row = by_name.get(name)
        if claims is None or row is None:
            continue
        loc = _row_loc(spec, name)
        found += _output_size(spec, name, claims, row["output"], loc)
        found += _quantities(spec, claims, name, {"params": loc, "ops": loc}, {"params": row["params"], "ops": row["macs_per_sample"]},
                             tolerance)
        if claims.depth is not None and claims.depth != row["depth"]:
            found.append(warning(f"depth: the paper says {claims.depth}, the spec computes {row['depth']}",
                                 name, loc))
    return found


def check_output_claims(spec: Spec, g: nx.DiGraph) -> list[Diagnostic]:
    """The claimed output sizes (``claims: {output: 28x28x256}``, a table's output column) that
    differ from the computed ones, each an error at its row: what ``archc validate`` compares, from
    the graph with shapes alone (:func:`~archcompiler.passes.shapes.infer_shapes`; no cost pass)."""
    found: list[Diagnostic] = []
    outputs = row_outputs(g, spec)
    for name in spec.rows:
        claims = spec.row_claims(name)
        if claims is None or claims.output is None or name not in outputs:
            continue
        found += _output_size(spec, name, claims, outputs[name], _row_loc(spec, name))
    return found


def row_outputs(g: nx.DiGraph, spec: Spec) -> dict[str, tuple[int, ...]]:
    """Each top-level row's output shape, as :func:`~archcompiler.passes.analyze.rows` takes it: a
    block instance's output layer, else the row's last node in the schedule."""
    last: dict[str, str] = {}
    for n in schedule(g):
        if g.nodes[n]["inputs"]:             # the network's input is no row
            last[row_key(g, n, 1)] = n
    out = {}
    for name, node in last.items():
        instance = spec.instances.get(name)
        if instance is not None:
            node = g.graph["layer_output"].get(instance.output, node)
        out[name] = tuple(g.nodes[node]["shape"])
    return out


def count_output_claims(spec: Spec) -> int:
    """How many rows claim an output size."""
    return sum(1 for name in spec.rows if (c := spec.row_claims(name)) is not None and c.output is not None)


def _row_loc(spec: Spec, name: str) -> Location:
    return spec.instances[name].loc if name in spec.instances else spec.layer(name).loc


def _output_size(spec: Spec, name: str, claims: Any, output: Any, loc: Location) -> list[Diagnostic]:
    """An error when the row's claimed output size is not the computed ``output`` ([C, H, W] or [F])."""
    chw = claims.output_chw()
    computed_chw = tuple(output) + (1, 1) if len(output) == 1 else tuple(output)
    if chw is None or tuple(chw) == computed_chw:
        return []
    if len(computed_chw) != 3:           # a sequence (tokens x dim) where the paper gives a map
        return [error(f"output size: the paper says {claims.output}, the spec computes "
                      f"{'x'.join(map(str, computed_chw))}", name, loc)]
    c, h, w = computed_chw
    return [error(f"output size: the paper says {claims.output}, the spec computes {h}x{w}x{c}",
                  name, loc, hint=_size_hint(spec, name, tuple(chw), computed_chw))]


def _quantities(spec: Spec, claims: Any, name: str, locs: dict[str, Any], computed_by: dict[str, int],
                tolerance: float, at: str = "") -> list[Diagnostic]:
    """Warnings for the params / ops claims further off than the tolerance (each at ``locs[key]``)."""
    found = []
    for key, base in (("params", _base(spec.claim_units.params)), ("ops", _base(spec.claim_units.ops))):
        text, computed = getattr(claims, key), computed_by[key]
        if text is None:
            continue
        claimed = parse_quantity(text, base)
        off = abs(computed - claimed) / claimed if claimed else float("inf") if computed else 0.0
        if off > tolerance and not _same_when_printed(computed, str(text), base):
            unit = "parameters" if key == "params" else "multiply-adds"
            found.append(warning(
                f"{key}: the paper says {text} ({claimed:,.0f} {unit}), the spec computes{at} "
                f"{computed:,} ({_human(computed, base)}), {100 * off:.1f}% off", name, locs[key]))
    return found


def _size_hint(spec: Spec, name: str, claimed: tuple[int, int, int], computed: tuple[int, int, int]) -> str:
    """What to check, for what differs: channels come from channel counts, height and width from
    kernels, strides and padding."""
    hints = []
    if claimed[0] != computed[0]:
        if name in spec.instances:
            hints.append(f"the channels ({computed[0]}, the paper {claimed[0]}) are the sum of the branches' "
                         "output channels: check the row's columns and the block's 'out' fields")
        else:
            hints.append(f"the channels ({computed[0]}, the paper {claimed[0]}) come from 'out' of this layer "
                         "or of the layer before it")
    if claimed[1:] != computed[1:]:
        hints.append(f"the height and width ({computed[1]}x{computed[2]}, the paper {claimed[1]}x{claimed[2]}) "
                     "follow from kernel, stride, padding and ceil_mode here and before")
    return "; ".join(hints)


def _human(n: float, base: int) -> str:
    for suffix, power in (("G", 3), ("M", 2), ("K", 1)):
        if n >= base ** power:
            return f"{n / base ** power:.4g}{suffix}"
    return str(int(n))


def _same_when_printed(computed: float, text: str, base: int) -> bool:
    """True when ``computed``, printed with the claim's prefix and precision, reads as the claim
    (the paper's "1M" for 1,024,000 multiply-adds is rounding, not an error)."""
    text = text.strip()
    prefix = text[-1].lower() if text and text[-1].isalpha() else ""
    digits = text.rstrip("kKmMgGtT")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[prefix]
    try:
        return round(computed / base ** power, decimals) == float(digits)
    except ValueError:
        return False
