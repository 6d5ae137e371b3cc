"""The diagram backend: the architecture as a graphviz picture, drawn from the spec's graph.

- expanded view: one node per spec layer (a conv's BatchNorm and ReLU are shown in its label),
  each block instance a cluster labelled with its name and its row of the table;
- ``collapse=True`` (or ``depth=N``): block instances below that depth become single nodes with
  their input / output shapes, params and MACs;
- edges carry tensor shapes (C x H x W); training-only heads are dashed and labelled;
- ``color='flops'|'params'``: nodes shaded by their share of the cost, with a legend.

Output is deterministic (stable ids, declaration order), so DOT text can be diffed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from ..errors import BackendError, Location, error
from ..io import write_bytes, write_text
from ..ir import INPUT, OPS, schedule
from ..modelfile import is_model_file, read_model_file
from ..modelspec import embedded_spec
from ..ops import Style
from ..passes import annotated_graph
from ..spec import Spec, load_spec
from ..util import shape_text

FORMATS = ("svg", "png", "pdf", "dot")
PALETTE = ["#ffffff", "#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801", "#a63603"]
FONT = "Helvetica"
LEGEND = ["0", "&lt; 2.5%", "2.5-5%", "5-7.5%", "7.5-10%", "10-12.5%", "12.5-15%", "15-17.5%", "&#8805; 17.5%"]


BLOCK = Style("box3d", "#dbe9f6")     # a collapsed block instance
# the label's names of the primitives a layer adds to its main op (by role): BatchNorm, activations
EXTRAS = {"bn": "BN", "relu": "ReLU"}


@dataclass
class Drawing:
    source: str                 # DOT text
    path: Path | None           # the file written (None for output "-": the caller prints ``data``)
    format: str
    rendered: bool              # False when `dot` was missing and only DOT text was written
    data: bytes = b""           # the rendered file (DOT text for format "dot")


def _id(name: str) -> str:
    return "n_" + re.sub(r"\W", "_", name) + ("_" + format(abs(hash_stable(name)) % 4096, "x")
                                              if re.search(r"\W", name) else "")


def hash_stable(text: str) -> int:
    h = 0
    for ch in text:
        h = (h * 131 + ord(ch)) % (1 << 31)
    return h


def _esc(text: str) -> str:
    """Escape user text for a graphviz label (backslashes would be escape sequences)."""
    return str(text).replace("\\", "\\\\").replace("\n", " ")


def _shape(s: tuple[int, ...]) -> str:
    return shape_text(s)


def _human(n: float) -> str:
    for suffix, p in (("G", 9), ("M", 6), ("K", 3)):
        if n >= 10 ** p:
            return f"{n / 10 ** p:.3g}{suffix}"
    return str(int(n))


def _main(g: nx.DiGraph, nodes: list[str]) -> str:
    """The node of a layer that carries its op (a conv's, not its BatchNorm's)."""
    return next((n for n in nodes if g.nodes[n]["role"] in ("main", "conv")), nodes[0])


def _layer_label(g: nx.DiGraph, nodes: list[str], spec: Spec) -> str:
    d = g.nodes[_main(g, nodes)]
    name = d["layer"].rsplit("/", 1)[-1]
    op = d["spec_op"]
    parts = [op.replace("_", " ")]
    patch = OPS[d["op"]].patch(d["attrs"])
    if patch:
        parts.append(patch)
    detail = OPS[d["op"]].style.detail(d["attrs"])
    if detail:
        parts.append(detail)
    extras = [g.nodes[n]["role"] for n in nodes if g.nodes[n]["role"] not in ("main", "conv", "flatten")]
    extras = [EXTRAS.get(e, e) for e in extras]
    line2 = " ".join(parts) + (" + " + " + ".join(extras) if extras else "")
    return f"{_esc(name)}\\n{_esc(line2)}"


def _instance_depth(spec: Spec, name: str) -> int:
    depth, inst = 1, spec.instances[name]
    while inst.parent:
        depth += 1
        inst = spec.instances[inst.parent]
    return depth


def build_dot(spec: Spec, collapse: bool = False, depth: int | None = None, color: str = "none",
              rankdir: str = "TB", g: nx.DiGraph | None = None) -> Any:
    """A ``graphviz.Digraph`` for ``spec``."""
    import graphviz

    g = g if g is not None else annotated_graph(spec)
    # block instances nested deeper than `limit` are drawn as one node (None: expand everything)
    limit = depth if depth is not None else (0 if collapse else None)

    # which drawn node each IR node belongs to: a spec layer, or a collapsed block instance
    def unit(n: str) -> str:
        data = g.nodes[n]
        group = data["group"]
        chain: list[str] = []
        while group:
            chain.append(group)
            group = spec.instances[group].parent
        chain.reverse()                               # outermost first
        if limit is not None:
            for inst in chain:
                if _instance_depth(spec, inst) > limit:
                    return inst
        return data["layer"]

    order = [n for n in schedule(g)]
    units: dict[str, list[str]] = {}
    for n in order:
        units.setdefault(unit(n), []).append(n)
    collapsed = {u for u in units if u in spec.instances}

    total_cost = {"flops": sum(g.nodes[n]["macs"] for n in g.nodes),
                  "params": sum(g.nodes[n]["params"].total for n in g.nodes)}

    def cost(u: str) -> int:
        key = "macs" if color == "flops" else "params"
        return sum(g.nodes[n][key] if key == "macs" else g.nodes[n]["params"].total for n in units[u])

    def out_node(u: str) -> str:
        if u in spec.instances:
            # (a row that features: cut short, or the inference graph thinned, ends at its last node)
            return g.graph["layer_output"].get(spec.instances[u].output, units[u][-1])
        return units[u][-1]

    dot = graphviz.Digraph(name=spec.name, format="svg")
    dot.attr(comment="drawn by archc", rankdir=rankdir, fontname=FONT, fontsize="11", nodesep="0.25", ranksep="0.35",
             label=_esc(f"{spec.name}: {spec.description}" if spec.description else spec.name),
             labelloc="t", fontcolor="#333333", newrank="true")
    dot.attr("node", fontname=FONT, fontsize="10", style="rounded,filled", shape="box", margin="0.12,0.04",
             color="#555555", penwidth="0.8")
    dot.attr("edge", fontname=FONT, fontsize="8", color="#777777", fontcolor="#555555", arrowsize="0.6")

    def node_attrs(u: str) -> dict[str, str]:
        nodes = units[u]
        training = all(g.nodes[n]["training_only"] for n in nodes)
        if u in collapsed:
            inst = spec.instances[u]
            first_inputs = [i for n in nodes for i in g.nodes[n]["inputs"] if i not in nodes]
            in_shape = _shape(g.nodes[first_inputs[0]]["shape"]) if first_inputs else ""
            params = sum(g.nodes[n]["params"].total for n in nodes)
            macs = sum(g.nodes[n]["macs"] for n in nodes)
            times = inst.args.get("repeat", 1)       # a row the table repeats: the paper's "x3"
            block = f"{inst.block} x{times}" if isinstance(times, int) and times > 1 else inst.block
            label = (f"{_esc(u.rsplit('/', 1)[-1])}\\n{_esc(block)}\\n{in_shape} -> "
                     f"{_shape(g.nodes[out_node(u)]['shape'])}\\n{_human(params)} params, {_human(macs)} MACs")
            shape, fill = BLOCK.shape, BLOCK.fill
        elif u == INPUT:
            label = f"input\\n{_shape(g.nodes[INPUT]['shape'])}"
            style = OPS[g.nodes[INPUT]["op"]].style
            shape, fill = style.shape, style.fill
        else:
            label = _layer_label(g, nodes, spec)
            style = OPS[g.nodes[_main(g, nodes)]["op"]].style
            shape, fill = style.shape, style.fill
        if color in ("flops", "params") and u != INPUT:
            total = total_cost[color] or 1
            share = cost(u) / total
            fill = PALETTE[0 if share == 0 else min(len(PALETTE) - 1, int(share * 100 / 2.5) + 1)]
        attrs = {"label": label, "shape": shape, "fillcolor": fill}
        if fill in PALETTE[6:]:
            attrs["fontcolor"] = "white"          # readable on the darkest shades
        if training:
            attrs["style"] = "rounded,filled,dashed"
            attrs["fontcolor"] = "#666666"
        return attrs

    # clusters for expanded block instances (nested as the instances are)
    def cluster_path(u: str) -> list[str]:
        data = g.nodes[units[u][0]]
        group = data["group"] if u not in collapsed else spec.instances[u].parent
        chain = []
        while group:
            if group not in collapsed:
                chain.append(group)
            group = spec.instances[group].parent
        return list(reversed(chain))

    tree: dict[tuple, list[str]] = {}
    for u in units:
        tree.setdefault(tuple(cluster_path(u)), []).append(u)

    inside: dict[tuple, list[str]] = {}       # cluster path -> every IR node drawn inside it
    for path, us in tree.items():
        for k in range(1, len(path) + 1):
            inside.setdefault(path[:k], []).extend(n for u in us for n in units[u])

    def cluster_label(inst_name: str, training: bool) -> str:
        inst = spec.instances[inst_name]
        label = _esc(inst_name.rsplit("/", 1)[-1])
        if inst.from_table and inst.args:
            cells = "  ".join(f"#{_esc(k)} {_esc(v)}" for k, v in spec.built_columns(inst.name).items())
            label += f"\\l{cells}"
        else:
            label += f" ({_esc(inst.block)})"
        if training:
            label += "\\ltraining only"
        return label + "\\l"          # left-justified lines

    def emit(container: Any, path: tuple) -> None:
        here = tree.get(path, [])
        for u in here:
            container.node(_id(u), **node_attrs(u))
        if path:     # inside a block: the first layer of every branch on one line
            members = {n for u in here for n in units[u]}
            entries = [u for u in here if any(i not in members for n in units[u] for i in g.nodes[n]["inputs"])]
            if len(entries) > 1:
                with container.subgraph() as same:
                    same.attr(rank="same")
                    for u in entries:
                        same.node(_id(u))
        children = sorted((p for p in inside if len(p) == len(path) + 1 and p[:len(path)] == path),
                          key=lambda p: min(g.nodes[n]["order"] for n in inside[p]))
        for child in children:
            training = all(g.nodes[n]["training_only"] for n in inside[child])
            with container.subgraph(name="cluster_" + _id(child[-1])) as sub:
                sub.attr(label=cluster_label(child[-1], training), style="rounded,dashed" if training else "rounded",
                         color="#999999", fontsize="10", labeljust="l", margin="10", fontname=FONT)
                emit(sub, child)

    emit(dot, ())

    edges = []
    for u, nodes in units.items():
        member = set(nodes)
        for n in nodes:
            shape_only = OPS[g.nodes[n]["op"]].shape_inputs(g.nodes[n]["attrs"])     # the label names them
            for k, i in enumerate(g.nodes[n]["inputs"]):
                if i in member or k in shape_only:
                    continue
                src = unit(i)
                edges.append((src, u, g.nodes[i]["shape"], g.nodes[n]["training_only"]))
    seen = set()
    for src, dst, shape, training in edges:
        if (src, dst) in seen:
            continue
        seen.add((src, dst))
        attrs = {"label": " " + _shape(shape)}
        if training:
            attrs["style"] = "dashed"
        dot.edge(_id(src), _id(dst), **attrs)

    if color in ("flops", "params"):
        what = "multiply-adds" if color == "flops" else "parameters"
        cells = "".join(f'<TD BGCOLOR="{PALETTE[k]}">{text}</TD>' for k, text in enumerate(LEGEND))
        dot.node("legend", shape="plaintext", style="", fontsize="9", label=(
            f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
            f'<TR><TD COLSPAN="{len(LEGEND)}">share of the network\'s {what}</TD></TR><TR>{cells}</TR></TABLE>>'))
    return dot


def draw(spec_or_path: Spec | str | Path, output: str | Path | None = None, format: str | None = None,
         collapse: bool = False, depth: int | None = None, color: str = "none", rankdir: str = "TB",
         overrides: dict | list | None = None, force: bool = False, optimized: bool = False) -> Drawing:
    """Render the diagram to ``output`` (format from its extension unless given; default
    ``<spec name>.svg`` in the current folder). ``output="-"`` writes no file: the drawing comes back
    as ``data`` (SVG unless ``format`` says otherwise), for the caller to print. Without the ``dot``
    binary, the DOT text is written beside the requested file and :class:`BackendError` says how to
    install graphviz.
    The output never replaces the input, and a default name never replaces a file archc did not
    write unless ``force`` is given."""
    from ..io import check_default_output, refuse_inputs

    spec = _spec(spec_or_path, overrides)
    to_stdout = str(output) == "-"
    if format is None:
        suffix = "svg" if to_stdout or not output else Path(output).suffix.lstrip(".").lower()
        format = suffix if suffix in FORMATS else "svg"
        if output and suffix not in FORMATS and suffix != "gv":
            raise BackendError([error(f"cannot tell the format from {output!r}", "--format",
                                      hint=f"use one of .{', .'.join(FORMATS)} or give --format")])
    if format not in FORMATS:
        raise BackendError([error(f"unknown format {format!r}", "--format", hint=f"one of {', '.join(FORMATS)}")])
    path = Path(output) if output else Path(f"{spec.name}.{format}")
    if isinstance(spec_or_path, (str, Path)) and not to_stdout:
        refuse_inputs(path, [spec_or_path])
    if not output:
        check_default_output(path, force)
    graph = None
    if optimized:
        from ..passes.optimize import optimize

        graph = optimize(annotated_graph(spec))
    dot = build_dot(spec, collapse=collapse, depth=depth, color=color, rankdir=rankdir, g=graph)
    source = dot.source
    data = source.encode() if format == "dot" else _render(dot, format, path, to_stdout)
    if not to_stdout:
        write_bytes(path, data)
    return Drawing(source, None if to_stdout else path, format, rendered=format != "dot", data=data)


def _render(dot: Any, format: str, path: Path, to_stdout: bool) -> bytes:
    """The drawing rendered by graphviz's ``dot``. Without the binary, the DOT text is written beside
    ``path`` (unless the drawing was for standard output) and the error says how to install it."""
    import graphviz

    try:
        return dot.pipe(format=format)
    except graphviz.ExecutableNotFound:
        if to_stdout:
            raise BackendError([error(f"the graphviz 'dot' program is not installed, so no {format.upper()} "
                                      "was made", "draw", hint="install graphviz ('apt-get install graphviz', "
                                      "'brew install graphviz'), or print the DOT text with --format dot")]) from None
        fallback = path.with_suffix(".dot")
        write_text(fallback, dot.source)
        raise BackendError([error(
            f"the graphviz 'dot' program is not installed, so no {format.upper()} was made; "
            f"the DOT source was written to {fallback}", "draw", Location(str(fallback)),
            hint="install graphviz: 'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' "
                 "(macOS), or render later with 'dot -T" + format + f" {fallback} -o {path}'")]) from None
    except graphviz.CalledProcessError as exc:
        raise BackendError([error(f"dot failed: {exc.stderr.decode(errors='replace')[:500] if exc.stderr else exc}",
                                  "draw")]) from None


def _spec(spec_or_path: Spec | str | Path, overrides: dict | list | None) -> Spec:
    if is_model_file(spec_or_path):
        return embedded_spec(read_model_file(spec_or_path), overrides, file=str(spec_or_path))
    return load_spec(spec_or_path, overrides)


def collapsed_svg(spec: Spec) -> tuple[str, dict[str, str]]:
    """The diagram with one node per module, shaded by MACs, as inline SVG, and each module's node id
    (the SVG's node title), for pages that make modules clickable (``archc report``)."""
    svg = build_dot(spec, collapse=True, color="flops").pipe(format="svg").decode()
    return svg[svg.index("<svg"):], {name: _id(name) for name in spec.instances}
