"""A sweep's outputs: ``pareto.png`` (matplotlib, written atomically) and the HTML page ``archc
report --sweep`` writes (the table and the plot, self-contained, offline).

The plot is latency against MACs (predicted latency, or measured where ``--measure`` timed it), or
accuracy against latency when the variants were trained; the Pareto front is drawn as a line through
its points. Every variant is labelled with its settings; variants drawn at one place (equal or nearly
equal cost) share one label that names them all.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from ..version import __version__

LABELS = {"macs": "MACs (multiply-adds, at the sweep's batch)", "predicted_ms": "predicted latency (ms)",
          "measured_ms": "measured latency (ms)", "accuracy": "validation accuracy"}


# variants closer than this (a fraction of each axis's span, on the log scale where the axis is one)
# share one label: their markers would cover each other
NEAR = 0.015
MAX_LABELS = 40           # more groups than this: only those on the Pareto front are labelled
MAX_LINES = 12            # names listed in one label, then "and N more"


def pareto_figure(result: dict[str, Any]) -> Any:
    """The Pareto plot of a sweep (``archcompiler.sweep``'s result) as a matplotlib Figure (the caller
    closes it). Every variant plotted is named: variants whose points would cover each other (equal or
    nearly equal cost, as a class count that changes only the classifier) share one marker's label,
    written ``width=0.5 (num_classes=10, 1000)`` where one setting tells them apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    x, y = result["axes"]["x"], result["axes"]["y"]
    plotted = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    front = sorted((r for r in plotted if r["pareto"]), key=lambda r: r[x])
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    ax.scatter([r[x] for r in plotted if not r["pareto"]], [r[y] for r in plotted if not r["pareto"]],
               s=18, color="#9aa9b8", label="variant")
    ax.plot([r[x] for r in front], [r[y] for r in front], "o-", color="#c0392b", markersize=5,
            label=f"Pareto front ({len(front)})")
    log_x = x in ("macs",) and bool(plotted) and min(r[x] for r in plotted) > 0
    if log_x:
        ax.set_xscale("log")
    groups = _near_groups(plotted, x, y, log_x)
    if len(groups) > MAX_LABELS:
        groups = [g for g in groups if any(r["pareto"] for r in g)]
    labels = []
    for group, right in groups:
        on_front = any(r["pareto"] for r in group)
        anchor = next((r for r in group if r["pareto"]), group[0])
        # a label reads to the right of its point, to the left in the right third (inside the axes)
        labels.append(dict(text=group_label(group), xy=(anchor[x], anchor[y]), xytext=(-5 if right else 5, 3),
                           textcoords="offset points", fontsize=7, color="#222" if on_front else "#55606b",
                           ha="right" if right else "left", va="bottom"))
    _place_labels(fig, ax, labels)
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    failed = sum(not r["ok"] for r in rows)
    ax.set_title(f"{result['spec']}: {len(plotted)} variants, batch {result['batch']}"
                 + (", optimized" if result["optimize"] else "") + (f" ({failed} invalid, not shown)" if failed else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pareto_png(result: dict[str, Any]) -> bytes:
    """The Pareto plot of a sweep (:func:`pareto_figure`) as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(result)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": f"archc {__version__}"})
    finally:
        plt.close(fig)
    return buf.getvalue()


def _place_labels(fig: Any, ax: Any, labels: list[dict[str, Any]]) -> None:
    """Annotate ``ax`` with ``labels`` (``annotate``'s keywords), each moved up, from the lowest, until
    it covers no label placed before it; a label moved off its point gets a thin line to it."""
    renderer = fig.canvas.get_renderer()
    to_points = 72 / fig.dpi
    placed: list[Any] = []
    order = sorted(labels, key=lambda k: ax.transData.transform(k["xy"])[1])
    for spec in order:
        text = ax.annotate(**spec)
        dx, dy = spec["xytext"]
        moved = False
        for _ in range(len(placed) + 1):
            box = text.get_window_extent(renderer)
            hit = next((b for b in placed if box.x0 < b.x1 and b.x0 < box.x1 and box.y0 < b.y1 and b.y0 < box.y1),
                       None)
            if hit is None:
                break
            dy += (hit.y1 - box.y0 + 1) * to_points
            text.xyann = (dx, dy)
            moved = True
        if moved:
            text.remove()
            text = ax.annotate(**{**spec, "xytext": (dx, dy)},
                               arrowprops=dict(arrowstyle="-", color="#b8c2cc", lw=0.6, shrinkA=0, shrinkB=3))
        placed.append(text.get_window_extent(renderer))


def _near_groups(rows: list[dict[str, Any]], x: str, y: str,
                 log_x: bool) -> list[tuple[list[dict[str, Any]], bool]]:
    """``rows`` in groups whose points lie within :data:`NEAR` of the group's first point on both axes
    (measured as the plot draws them: on the log scale where x is one), each group in the sweep's order,
    with whether it stands in the right third of the plot."""
    import math

    def position(r: dict[str, Any]) -> tuple[float, float]:
        return (math.log10(r[x]) if log_x else float(r[x])), float(r[y])

    if not rows:
        return []
    points = [position(r) for r in rows]
    span_x = (max(p[0] for p in points) - min(p[0] for p in points)) or 1.0
    span_y = (max(p[1] for p in points) - min(p[1] for p in points)) or 1.0
    groups: list[tuple[tuple[float, float], list[dict[str, Any]]]] = []
    for r, (px, py) in zip(rows, points):
        for (gx, gy), members in groups:
            if abs(px - gx) <= NEAR * span_x and abs(py - gy) <= NEAR * span_y:
                members.append(r)
                break
        else:
            groups.append(((px, py), [r]))
    left = min(p[0] for p in points)
    return [(members, gx - left > 2 / 3 * span_x) for (gx, _), members in groups]


def group_label(rows: list[dict[str, Any]]) -> str:
    """One label naming every variant of ``rows`` (points drawn at one place): the name of one; for
    several that differ in one setting, the settings they share and that setting's values
    (``width=0.5 (num_classes=10, 1000)``); else their names, one a line."""
    if len(rows) == 1:
        return str(rows[0]["name"])
    sets = [r.get("sets") or {} for r in rows]
    keys = list(sets[0])
    if keys and all(list(s) == keys for s in sets):
        varying = [k for k in keys if len({str(s[k]) for s in sets}) > 1]
        if len(varying) == 1:
            k = varying[0]
            values = list(dict.fromkeys(str(s[k]) for s in sets))
            common = " ".join(f"{c}={sets[0][c]}" for c in keys if c != k)
            listed = f"{k}={', '.join(values)}"
            return f"{common} ({listed})" if common else listed
    names = [str(r["name"]) for r in rows]
    if len(names) > MAX_LINES:
        names = [*names[:MAX_LINES - 1], f"and {len(names) - MAX_LINES + 1} more"]
    return "\n".join(names)


def write_pareto(result: dict[str, Any], path: str | Path) -> Path:
    from ..io import write_bytes

    return write_bytes(path, pareto_png(result))


def read_sweep(path: str | Path) -> tuple[dict[str, Any], bytes | None]:
    """A sweep written by ``archc sweep -o DIR``: its ``sweep.json`` (DIR, or the file itself) and the
    ``pareto.png`` beside it (None when missing). Anything else is refused, located at the path."""
    import json

    from ..errors import BackendError, Location, error

    where = Path(path)
    file = where / "sweep.json" if where.is_dir() else where
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError([error(f"no sweep at {file}", "--sweep", Location(str(file)),
                                  hint="give the folder of archc sweep -o DIR, or its sweep.json")]) from None
    except (OSError, ValueError) as exc:
        raise BackendError([error(f"cannot read the sweep {file}: {exc}", "--sweep", Location(str(file)))]) from None
    if not isinstance(result, dict) or result.get("archc_sweep") != 1 or not isinstance(result.get("rows"), list):
        raise BackendError([error(f"{file} is not a sweep written by archc sweep", "--sweep", Location(str(file)))])
    png = file.parent / "pareto.png"
    return result, png.read_bytes() if png.is_file() else None


COLUMNS = [("variant", "name"), ("params", "params"), ("MACs", "macs"), ("peak activations MiB", "peak_activation_bytes"),
           ("training step MiB", "train_memory_bytes"), ("predicted ms", "predicted_ms"),
           ("predicted rank", "predicted_rank"), ("measured ms", "measured_ms"), ("measured rank", "measured_rank"),
           ("accuracy", "accuracy"), ("Pareto", "pareto")]


def cell(row: dict[str, Any], key: str) -> str:
    """A table cell as text: MiB for bytes, ms to 3 places, ranks as whole numbers where whole."""
    value = row.get(key)
    if value is None:
        return ""
    if key == "pareto":
        return "*" if value else ""
    if key.endswith("_bytes"):
        return f"{value / 2**20:.1f}"
    if key.endswith("_ms"):
        return f"{value:.3f}"
    if key.endswith("_rank"):
        return f"{value:g}"
    if key == "accuracy":
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's columns: those some row has a value for (measured and accuracy only when there)."""
    return [(h, k) for h, k in COLUMNS if k in ("name", "pareto") or any(r.get(k) is not None for r in rows)]


def sweep_html(result: dict[str, Any], png: bytes | None) -> str:
    """``archc report --sweep DIR``: the sweep's table (invalid variants with their errors) and plot."""
    e = html.escape
    cols = columns(result["rows"])
    head = "".join(f"<th>{e(h)}</th>" for h, _ in cols) + "<th>error</th>"
    body = []
    for r in result["rows"]:
        cells = "".join(f"<td{' class=l' if k == 'name' else ''}>{e(cell(r, k))}</td>" for _, k in cols)
        err = "<br>".join(e(d["text"]) for d in r.get("errors", []))
        body.append(f"<tr class='{'front' if r['pareto'] else ''}{' bad' if not r['ok'] else ''}'>{cells}"
                    f"<td class=l>{err}</td></tr>")
    img = (f"<img alt='Pareto plot' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else
           "<p>no pareto.png in the sweep's folder</p>")
    grid = "; ".join(f"{p} = {', '.join(v)}" for p, v in result["grid"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>archc sweep of {e(result['spec'])}</title>
<meta name="generator" content="archc {__version__}">
<style>body{{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;font-size:12.5px}}
th,td{{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}}th{{background:#f1f5f9}}.l{{text-align:left}}
tr.front td{{background:#fdf0ee;font-weight:bold}}tr.bad td{{color:#a33}}img{{max-width:100%}}</style></head>
<body><h1>archc sweep of {e(result['spec'])}</h1>
<p>{len(result['rows'])} variants ({sum(r['ok'] for r in result['rows'])} valid), batch {result['batch']}
{'(optimized) ' if result['optimize'] else ''}over {e(grid)}; machine profile: {e(str(result.get('machine')))}.
Bold rows are on the Pareto front of {e(LABELS.get(result['axes']['y'], ''))} against
{e(LABELS.get(result['axes']['x'], ''))}.</p>
{img}
<table><tr>{head}</tr>
{chr(10).join(body)}
</table></body></html>
"""


__all__ = ["pareto_figure", "pareto_png", "group_label", "write_pareto", "read_sweep", "sweep_html", "columns", "cell", "COLUMNS", "LABELS"]
