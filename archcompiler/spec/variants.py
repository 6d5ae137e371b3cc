"""A spec's ``variants:``: the paper's table of variants (ResNet's Table 1 has a column per depth,
18 to 152 layers). One parameter (``by``) names the column; every row then becomes a parameter with
that column's value, usable in expressions and as a block's name in ``use:``.

    params: {depth: 50}
    variants:
      by: depth
      columns: [18, 34, 50, 101, 152]
      rows:
        block:   [basic, basic, bottleneck, bottleneck, bottleneck]
        conv4_n: [2, 6, 6, 23, 36]
"""

from __future__ import annotations

import keyword
from typing import Any

from ..errors import Diagnostic, error
from . import expr
from .base import suggest
from .source import YDict, locate


def choose_variant(doc: YDict, errors: list[Diagnostic], failed: set[str]) -> dict[str, Any]:
    """The rows' values in the column the ``by`` parameter names (empty without ``variants:``), and
    the ``by`` parameter's own value where it is written as a word or an expression.
    Problems are appended to ``errors``; the rows that could not be given a value go to ``failed``,
    so that the expressions using them are not reported again."""
    table = doc.get("variants")
    if not table:
        return {}
    params = doc.get("params") or {}
    by, columns, rows = table["by"], list(table["columns"]), table["rows"]
    ok = True
    for name, values in rows.items():
        where = locate(doc, ("variants", "rows", name), key=True)
        if not name.isidentifier() or keyword.iskeyword(name) or name in ("i", "N"):
            errors.append(error(f"variant row name {name!r} is not a valid parameter name",
                                f"variants.rows.{name}", where,
                                hint="use letters, digits and _ (not starting with a digit); i and N are "
                                     "a block's position"))
            ok = False
        elif name in params:
            errors.append(error(f"variant row {name!r} is also a parameter", f"variants.rows.{name}", where,
                                hint=f"the row gives {name!r} its value: remove it from 'params:' or rename one"))
            ok = False
        elif len(values) != len(columns):
            errors.append(error(f"row {name!r} has {len(values)} values but the variants have {len(columns)} "
                                f"columns ({', '.join(map(str, columns))})", f"variants.rows.{name}",
                                locate(doc, ("variants", "rows", name)), hint="one value per column, in order"))
            ok = False
    if by not in params:
        errors.append(error(f"the variants are chosen by {by!r}, which is not a parameter", "variants.by",
                            locate(doc, ("variants", "by")), value=by,
                            hint=suggest(by, set(params)) if params else "define it under 'params:'"))
        failed.update(rows)
        return {}
    value = params[by]
    if value not in columns and isinstance(value, str):
        try:                                 # an expression of parameters written as numbers
            value = expr.evaluate(value, {k: v for k, v in params.items() if not isinstance(v, str)})
        except expr.ExprError:
            pass
    if value not in columns or isinstance(value, bool):
        errors.append(error(f"{by} = {params[by]!r} is not one of the variants", f"params.{by}",
                            locate(doc, ("params", by)), value=params[by],
                            hint=f"the columns of 'variants:' are {', '.join(map(str, columns))}"))
        failed.update(rows)
        return {}
    if not ok:
        failed.update(rows)
        return {}
    k = columns.index(value)
    chosen = {name: values[k] for name, values in rows.items()}
    if isinstance(params[by], str):
        chosen[by] = value                   # a word names the column; not an expression to evaluate
    return chosen


def mentioned_in_blocks(doc: YDict) -> set[str]:
    """Every name an expression inside ``blocks:`` mentions. With variants, a parameter a block of
    another variant reads (ResNet-50's ``groups``, which the basic block of ResNet-18 has no use
    for) is not an unused one."""
    return _names_in([doc.get("blocks") or {}], keys=False)


def mentioned_outside_params(doc: YDict) -> set[str]:
    """Every name an expression anywhere but in ``params:`` mentions, and every mapping key (a builder's
    ``{depth: 50}`` names a parameter): what a parameter must be absent from to be dropped as stale."""
    return _names_in([v for k, v in doc.items() if k != "params"], keys=True)


def _names_in(roots: list[Any], keys: bool) -> set[str]:
    out: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if keys:
                out |= {k for k in node if isinstance(k, str)}
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                out |= expr.names(node)
            except expr.ExprError:
                pass
    return out
