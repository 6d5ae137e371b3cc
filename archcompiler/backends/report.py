"""``archc report``: everything archc knows about a spec on one self-contained HTML page.

The page works offline and makes no network request: the diagram is inline SVG (graphviz), the
charts are inline SVG (matplotlib), the script is a few lines of inline JavaScript. It shows the
diagram with one node per module (clicking a module opens its layers), the regenerated table with
the paper's inconsistent cells marked and explained, MACs and parameters per row and per stage,
the share of each op kind, the roofline (each row by arithmetic intensity and speed), memory per row
for inference and training, predicted (and with ``profile``, measured) latency, and the resolved
spec with the origin of every value.
"""

from __future__ import annotations

import html
import io
import math
import time
from pathlib import Path
from typing import Any

from ..spec import Spec, load_spec
from ..util import mib, shape_text
from ..version import __version__

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cfe0ef}main{padding:12px 28px 40px;max-width:1400px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:17px;margin:4px 0 10px;color:#1f3b57}.facts{display:flex;flex-wrap:wrap;gap:10px}
.fact{background:#eef4fa;border-radius:5px;padding:8px 12px}.fact b{display:block;font-size:18px}
table{border-collapse:collapse;font-size:12.5px}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f1f5f9;position:sticky;top:0}td.l,th.l{text-align:left}tr.training td{color:#888;font-style:italic}
td.inconsistent{background:#fde8c8;outline:1px solid #e59a2f;cursor:help}td.error{background:#f8d0d0}
.diagram{overflow:auto;max-height:720px;border:1px solid #eee}.diagram svg{max-width:none}
.diagram g.module{cursor:pointer}.diagram g.module:hover polygon,.diagram g.module:hover path{stroke:#c0392b;stroke-width:2}
.layers{display:none;margin:10px 0;border-left:3px solid #1f3b57;padding-left:10px}.layers.open{display:block}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}.chart svg{width:100%;height:auto}
pre{font-size:11.5px;background:#f6f8fa;padding:10px;overflow:auto;max-height:600px}
.note{color:#666;font-size:12.5px}ul.explain li{margin:4px 0}
"""

SCRIPT = """
document.querySelectorAll('.diagram g.node').forEach(function (g) {
  var title = g.querySelector('title');
  if (!title) return;
  var panel = document.getElementById('layers-' + title.textContent.trim());
  if (!panel) return;
  g.classList.add('module');
  g.addEventListener('click', function () {
    panel.classList.toggle('open');
    if (panel.classList.contains('open')) panel.scrollIntoView({block: 'nearest'});
  });
});
document.querySelectorAll('.layers .close').forEach(function (b) {
  b.addEventListener('click', function () { b.parentElement.classList.remove('open'); });
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]          # inline: no XML prolog, no DOCTYPE


def _name_points(ax: Any, named: list[tuple[float, str, float, float]], most: int = 14) -> None:
    """Label the costliest points of a log-log chart with their row names, leaving out a name that
    would overlap one already written (the inception modules sit in one cluster)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    span_x, span_y = math.log10(x1 / x0), math.log10(y1 / y0)
    boxes: list[tuple[float, float, float]] = []          # (log x, log y, width in log x) of written names
    for _, name, x, y in sorted(named, reverse=True)[:4 * most]:
        lx, ly, width = math.log10(x), math.log10(y), 0.012 * span_x * (len(name) + 1)
        if len(boxes) < most and all(not (bx - width < lx < bx + w) or abs(ly - by) > 0.05 * span_y
                                     for bx, by, w in boxes):
            boxes.append((lx, ly, width))
            ax.annotate(name, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=6, alpha=0.85)


def _charts(report: dict[str, Any], latency: dict[str, Any] | None, measured: dict[str, float] | None,
            train: dict[str, Any]) -> list[tuple[str, str]]:
    """The page's charts as (title, inline SVG): costs per row, per stage and per op kind; with a
    latency profile the roofline and the latency per row; memory per row."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"     # text stays text: small and searchable

    rows = [r for r in report["rows"] if not r["training_only"]]
    out = [("MACs and parameters per row", _row_cost_chart(rows)),
           ("MACs and parameters per stage", _stage_chart(report["stages"])),
           ("Op kinds", _op_kind_chart(report["by_op"]))]
    if latency is not None:
        out.append(("Roofline", _roofline_chart(rows, latency, measured)))
        out.append(("Latency per row", _latency_chart(rows, latency, measured, report["batch"])))
    out.append(("Memory per row", _memory_chart(rows, train)))
    return out


def _row_cost_chart(rows: list[dict[str, Any]]) -> str:
    """MACs (bars) and parameters (line) of each inference row."""
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(9, 3.6))
    ax1.bar(names, [r["macs"] / 1e6 for r in rows], color="#4a7fb0")
    ax1.set_ylabel("multiply-adds (M)")
    ax2 = ax1.twinx()
    ax2.plot(names, [r["params"] / 1e3 for r in rows], "o-", color="#d35400")
    ax2.set_ylabel("parameters (K)", color="#d35400")
    ax1.tick_params(axis="x", rotation=70, labelsize=7)
    ax1.set_title("MACs (bars) and parameters (line) per row")
    return _svg(fig)


def _stage_chart(stages: list[dict[str, Any]]) -> str:
    """MACs and parameters of each stage (output resolution), side by side."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    at = range(len(stages))
    ax.bar([x - 0.2 for x in at], [s["macs"] / 1e6 for s in stages], width=0.4, color="#4a7fb0")
    ax.set_ylabel("multiply-adds (M)", color="#4a7fb0")
    twin = ax.twinx()                      # parameters on their own axis: K and M on one axis mislead
    twin.bar([x + 0.2 for x in at], [s["params"] / 1e3 for s in stages], width=0.4, color="#d35400", alpha=0.7)
    twin.set_ylabel("parameters (K)", color="#d35400")
    ax.set_xticks(list(at), [s["resolution"] for s in stages])
    ax.set_xlabel("stage (output resolution)")
    ax.set_title("per stage: MACs (blue, left) and parameters (orange, right)")
    return _svg(fig)


def _op_kind_chart(by_op: dict[str, dict[str, int]]) -> str:
    """Each op kind's share of the MACs and of the element operations."""
    import matplotlib.pyplot as plt

    kinds = {k: v for k, v in by_op.items() if v["macs"] or v["elementwise"]}
    fig, ax = plt.subplots(figsize=(6, 3.4))
    total_macs = sum(v["macs"] for v in kinds.values()) or 1
    total_el = sum(v["elementwise"] for v in kinds.values()) or 1
    ks = list(kinds)
    ax.barh(ks, [100 * kinds[k]["macs"] / total_macs for k in ks], color="#4a7fb0", label="% of MACs")
    ax.barh(ks, [100 * kinds[k]["elementwise"] / total_el for k in ks], color="#27ae60", alpha=0.45,
            label="% of element operations")
    ax.set_xlabel("share (%)")
    ax.legend(fontsize=8)
    ax.set_title("share of each op kind")
    return _svg(fig)


def _roofline_chart(rows: list[dict[str, Any]], latency: dict[str, Any], measured: dict[str, float] | None) -> str:
    """The machine's roofline with each row at its arithmetic intensity and (measured, else
    predicted) speed, the costliest rows named."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    peak, bw = latency["peak_flops"], latency["bandwidth"]
    points = []                              # (intensity, GFLOP/s, colour) of each row
    named = []                               # (ms, name, intensity, GFLOP/s)
    for r in rows:
        p = latency["rows"].get(r["name"])
        if not p or not p["ms"] or not p["intensity"]:
            continue
        ms = measured.get(r["name"]) if measured else None
        speed = p["flops"] / ((ms or p["ms"]) / 1e3) / 1e9
        points.append((p["intensity"], speed, "#c0392b" if p["bound"] == "memory" else "#2c7fb8"))
        if speed > 0:
            named.append((ms or p["ms"], r["name"], p["intensity"], speed))
    # the roof from below the lowest intensity to a decade past the ridge (or the highest intensity)
    low = min([0.1, *(x for x, _, _ in points)]) / 2
    high = 10 * max([peak / bw, *(x for x, _, _ in points)])
    xs = [low * (high / low) ** (i / 59) for i in range(60)] + [peak / bw]
    xs.sort()
    ax.plot(xs, [min(peak, bw * x) / 1e9 for x in xs], "k-", lw=1, label="roofline (this machine)")
    if points:
        ix, speeds, colours = zip(*points)
        ax.scatter(ix, speeds, s=14, c=list(colours))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _name_points(ax, named)
    ax.minorticks_off()                     # a tick a decade; minor ticks on both log axes took half the page's drawing time
    ax.set_xlabel("arithmetic intensity (FLOP per byte)")
    ax.set_ylabel(("measured" if measured else "predicted") + " speed (GFLOP/s)")
    ax.set_title("roofline: blue compute-bound, red memory-bound (left of the ridge)")
    ax.legend(fontsize=8)
    return _svg(fig)


def _latency_chart(rows: list[dict[str, Any]], latency: dict[str, Any], measured: dict[str, float] | None,
                   batch: int) -> str:
    """Each row's predicted milliseconds (bars) and, when profiled, measured ones (points)."""
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    pred = [latency["rows"].get(n, {}).get("ms", 0) for n in names]
    ax.bar(names, pred, color="#8e44ad", alpha=0.75, label="predicted")
    if measured:
        ax.plot(names, [measured.get(n, 0) for n in names], "o", color="#111", label="measured")
    ax.set_ylabel("ms")
    ax.tick_params(axis="x", rotation=70, labelsize=7)
    ax.legend()
    ax.set_title(f"latency per row, batch {batch}")
    return _svg(fig)


def _memory_chart(rows: list[dict[str, Any]], train: dict[str, Any]) -> str:
    """Each row's inference output and the activations training saves for backward."""
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ax.bar(names, [(r["activation_bytes"] or 0) / 2**20 for r in rows], color="#16a085", label="inference output")
    ax.plot(names, [train["rows"].get(n, 0) / 2**20 for n in names], "s", color="#c0392b",
            label=f"saved for backward (training, batch {train['batch']})")
    ax.set_ylabel("MiB")
    ax.tick_params(axis="x", rotation=70, labelsize=7)
    ax.legend(fontsize=8)
    ax.set_title("memory per row")
    return _svg(fig)


def report_html(spec_or_path: Spec | str | Path, diagram: tuple[str, dict[str, str]], overrides: dict | list | None = None,
                batch: int = 1, machine: str | Path | None = None, measured: dict[str, float] | None = None,
                device: str = "cpu") -> str:
    """The page's HTML. ``diagram`` is the collapsed diagram as SVG with each module's node id (the dot
    backend's ``collapsed_svg``); ``measured`` the measured milliseconds per row, when profiled."""
    from ..passes import annotated_graph, check_claims, rows, totals
    from ..passes.analyze import analyze
    from ..passes.memory import training_memory

    started = time.perf_counter()
    spec = load_spec(spec_or_path, overrides)
    report = analyze(spec, batch=batch)
    g = annotated_graph(spec)
    train = training_memory(annotated_graph(spec), batch=max(batch, 8), optimizer=spec.train.optimizer)
    findings = check_claims(spec, rows(g, spec), 0.02, totals(g))
    latency, note = _latency(g, machine, device, batch)
    svg, node_ids = diagram
    sections = [_summary(spec, report, train, latency, note, measured),
                _architecture(spec, report, rows(g, spec, batch, depth=2), svg, node_ids),
                _table(spec, report, findings, latency, measured),
                _cost(_charts(report, latency, measured, train)), _resolved(spec)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="generator" content="archc {__version__}">
<title>{_e(spec.name)}: archc report</title><style>{CSS}</style></head>
<body><header><h1>{_e(spec.name)}</h1><p>{_e(_subtitle(spec))}</p></header><main>
{chr(10).join(sections)}
<p class="note">Made by archc {__version__} in {time.perf_counter() - started:.1f} s.</p>
</main><script>{SCRIPT}</script></body></html>
"""


def _latency(g: Any, machine: str | Path | None, device: str, batch: int) -> tuple[dict[str, Any] | None, str]:
    """The rows' predicted latency from the machine profile, or (None, a note that says how to get a
    profile) when there is none."""
    try:
        from ..passes.latency import cache_use, load_profile, peak_flops, predict_rows, unsteady
        from ..passes.machine import default_note

        prof = load_profile(machine, device)
        return {"rows": predict_rows(g, prof, batch), "machine": prof["name"], "threads": prof["threads"],
                "peak_flops": peak_flops(prof), "bandwidth": prof["bandwidth_bytes_per_s"],
                "warning": unsteady(prof) or default_note(prof), **cache_use(g, prof, batch)}, ""
    except Exception as exc:                    # no profile yet: the page says how to get one
        return None, f"No latency: {getattr(exc, 'errors', [exc])[0]}. Run archc calibrate, then archc report again."


def _subtitle(spec: Spec) -> str:
    """The spec's description and, when it names one, its paper."""
    paper = spec.paper
    return f"{spec.description}" + (f" — {paper.title}, {paper.venue} {paper.year}" if paper and paper.title else "")


def _summary(spec: Spec, report: dict[str, Any], train: dict[str, Any], latency: dict[str, Any] | None, note: str,
             measured: dict[str, float] | None) -> str:
    """The summary section: the headline facts, the input and conventions, and where latency came from."""
    from ..passes.latency import cache_speed

    t = report["total"]
    facts = [("parameters (inference)", f"{t['params']:,}"), ("multiply-adds", f"{t['macs']:,}"),
             ("depth", f"{report['depth']['with_params']} / {report['depth']['with_pooling']} with pooling"),
             ("peak activation memory", mib(report["peak_activation_bytes"])),
             (f"training step peak (batch {train['batch']}, {train['optimizer']})", mib(train["peak"])),
             ("receptive field", f"{report['receptive_field']['size'][0]} px")]
    batch = report["batch"]
    if latency:
        facts.append((f"predicted latency (batch {batch})", f"{sum(r['ms'] for r in latency['rows'].values()):.2f} ms"))
        facts.append(("working set / cache", f"{mib(latency['working_set_bytes'])} / {mib(latency['cache_bytes'])}: "
                      f"kernels at {cache_speed(latency['cold'])}"))
    if measured:
        facts.append(("measured latency (rows summed)", f"{sum(measured.values()):.2f} ms"))
    source = _e(note)
    if latency:
        source = f"Latency predicted from the machine profile of {_e(latency['machine'])} ({latency['threads']} threads)."
        if latency["warning"]:
            source += f" <b>Note:</b> {_e(latency['warning'][0].upper() + latency['warning'][1:])}."
    return f"""<section><h2>Summary</h2><div class="facts">{''.join(f'<div class="fact">{_e(k)}<b>{_e(v)}</b></div>' for k, v in facts)}</div>
<p class="note">input {_e(shape_text(report['input']))}, batch {batch}; {_e(report['convention'])}.
{source}</p></section>"""


def _architecture(spec: Spec, report: dict[str, Any], fine: list[dict[str, Any]], svg: str,
                  node_ids: dict[str, str]) -> str:
    """The diagram, one node per module, and each module's layers (``fine``: the rows at depth 2)
    in a panel that opens when its node is clicked."""
    panels = []
    for r in report["rows"]:
        if r["name"] not in spec.instances:
            continue
        layers = [f for f in fine if f["name"].startswith(r["name"] + "/")]
        body = "".join(f"<tr><td class='l'>{_e(f['name'].split('/', 1)[1])}</td><td class='l'>{_e(f['type'])}</td>"
                       f"<td>{_e(f['patch'])}</td><td>{_e(shape_text(f['output']))}</td><td>{f['params']:,}</td>"
                       f"<td>{f['macs']:,}</td></tr>" for f in layers)
        panels.append(f"<div class='layers' id='layers-{_e(node_ids.get(r['name'], ''))}'><button class='close'>close</button>"
                      f"<h3>{_e(r['name'])} ({_e(r['type'])}): {len(layers)} layers</h3><table><tr><th class='l'>layer"
                      f"</th><th class='l'>type</th><th>patch</th><th>output</th><th>params</th><th>MACs</th></tr>"
                      f"{body}</table></div>")
    return f"""<section><h2>Architecture</h2><p class="note">One node per module, shaded by its share of the MACs;
click a module to see its layers.</p><div class="diagram">{svg}</div>{''.join(panels)}</section>"""


def _table(spec: Spec, report: dict[str, Any], findings: list[Any], latency: dict[str, Any] | None,
           measured: dict[str, float] | None) -> str:
    """The spec's table regenerated, each cell the paper's claims contradict marked with the
    finding, and the findings listed in words."""
    marks: dict[tuple[str, str], str] = {}
    for d in findings:
        column = d.message.split(":")[0]
        marks[(d.path, "output" if column == "output size" else column)] = d.message
    columns: list[str] = []
    for r in report["rows"]:
        columns += [c for c in r["columns"] if c not in columns]
    head = "".join(f"<th>#{_e(c)}</th>" for c in columns)
    lines = [_table_row(r, spec.row_claims(r["name"]), marks, columns, latency, measured) for r in report["rows"]]
    explain = "".join(f"<li><b>{_e(d.path)}</b>: {_e(d.message)}</li>" for d in findings) or \
        "<li>every claim agrees with what the spec computes</li>"
    return f"""<section><h2>The table, regenerated</h2><p class="note">Cells where the paper's own number disagrees with the
spec are marked (hover for the numbers); rows marked * run in training only.</p>
<div style="overflow-x:auto"><table><tr><th class="l">name</th><th class="l">type</th><th>patch size/stride</th>
<th>output size</th><th>depth</th>{head}<th>params</th><th>ops (MACs)</th>{'<th>predicted ms</th>' if latency else ''}{'<th>measured ms</th>' if measured else ''}</tr>
{''.join(lines)}</table></div><h3>What the paper's numbers say</h3><ul class="explain">{explain}</ul></section>"""


def _table_row(r: dict[str, Any], claims: Any, marks: dict[tuple[str, str], str], columns: list[str],
               latency: dict[str, Any] | None, measured: dict[str, float] | None) -> str:
    """One row of the regenerated table; a cell with a claim shows the paper's number under archc's."""
    def cell(key: str, text: str) -> str:
        message = marks.get((r["name"], key))
        claim = getattr(claims, key, None) if claims is not None else None
        shown = f"{text}<br><small>paper: {_e(claim)}</small>" if claim is not None else text
        if message:
            cls = "error" if key == "output" else "inconsistent"
            return f"<td class='{cls}' title='{_e(message)}'>{shown}</td>"
        return f"<td>{shown}</td>"

    lat = latency["rows"].get(r["name"], {}).get("ms") if latency else None
    return (f"<tr class='{'training' if r['training_only'] else ''}'><td class='l'>{_e(r['name'])}"
            f"{' *' if r['training_only'] else ''}</td><td class='l'>{_e(r['type'])}</td><td>{_e(r['patch'])}</td>"
            + cell("output", shape_text(r["output"])) + f"<td>{r['depth']}</td>"
            + "".join(f"<td>{_e(r['columns'].get(c, ''))}</td>" for c in columns)
            + cell("params", f"{r['params']:,}") + cell("ops", f"{r['macs_per_sample']:,}")
            + (f"<td>{'' if lat is None else format(lat, '.3f')}</td>" if latency else "")
            + (f"<td>{format(measured[r['name']], '.3f') if r['name'] in measured else ''}</td>" if measured else "")
            + "</tr>")


def _cost(charts: list[tuple[str, str]]) -> str:
    """The charts section."""
    body = ''.join(f'<div class="chart" id="chart-{i}"><h3>{_e(title)}</h3>{svg}</div>'
                   for i, (title, svg) in enumerate(charts))
    return f'<section><h2>Cost</h2><div class="charts">{body}</div></section>'


def _resolved(spec: Spec) -> str:
    """The resolved spec, each value annotated with the file and line it came from."""
    from ..spec.origins import annotated_yaml

    return f"""<section><h2>The resolved spec</h2><p class="note">After extends, edits and overrides; each value with the
file and line it came from.</p><pre>{_e(annotated_yaml(spec.document))}</pre></section>"""
