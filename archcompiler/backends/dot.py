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
from ..options import DrawOptions
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


@dataclass
class _Units:
    """The drawn nodes of a diagram: each a spec layer or a collapsed block instance, with the IR nodes
    it stands for (in schedule order)."""
    spec: Spec
    g: nx.DiGraph
    limit: int | None                    # instances nested deeper are one node (None: expand everything)
    members: dict[str, list[str]]
    collapsed: set[str]

    @classmethod
    def of(cls, spec: Spec, g: nx.DiGraph, limit: int | None) -> _Units:
        """Group ``g``'s nodes, in schedule order, into the drawn nodes they belong to."""
        units = cls(spec, g, limit, {}, set())
        for n in schedule(g):
            units.members.setdefault(units.unit(n), []).append(n)
        units.collapsed = {u for u in units.members if u in spec.instances}
        return units

    def unit(self, n: str) -> str:
        """The drawn node that IR node ``n`` belongs to: its spec layer, or the outermost block
        instance deeper than the limit."""
        data = self.g.nodes[n]
        group = data["group"]
        chain: list[str] = []
        while group:
            chain.append(group)
            group = self.spec.instances[group].parent
        chain.reverse()                               # outermost first
        if self.limit is not None:
            for inst in chain:
                if _instance_depth(self.spec, inst) > self.limit:
                    return inst
        return data["layer"]

    def out_node(self, u: str) -> str:
        """The IR node whose tensor leaves drawn node ``u``."""
        if u in self.spec.instances:
            # (a row that features: cut short, or the inference graph thinned, ends at its last node)
            return self.g.graph["layer_output"].get(self.spec.instances[u].output, self.members[u][-1])
        return self.members[u][-1]

    def cost(self, u: str, color: str) -> int:
        """The MACs (``color='flops'``) or parameters of drawn node ``u``."""
        if color == "flops":
            return sum(self.g.nodes[n]["macs"] for n in self.members[u])
        return sum(self.g.nodes[n]["params"].total for n in self.members[u])

    def cluster_path(self, u: str) -> list[str]:
        """The expanded block instances around drawn node ``u``, outermost first."""
        data = self.g.nodes[self.members[u][0]]
        group = data["group"] if u not in self.collapsed else self.spec.instances[u].parent
        chain = []
        while group:
            if group not in self.collapsed:
                chain.append(group)
            group = self.spec.instances[group].parent
        return list(reversed(chain))


def build_dot(spec: Spec, collapse: bool = False, depth: int | None = None, color: str = "none",
              rankdir: str = "TB", g: nx.DiGraph | None = None) -> Any:
    """A ``graphviz.Digraph`` for ``spec``."""
    g = g if g is not None else annotated_graph(spec)
    units = _Units.of(spec, g, depth if depth is not None else (0 if collapse else None))
    dot = _digraph(spec, rankdir)
    _Clusters(units, color).emit(dot, ())
    _edges(units, dot)
    if color in ("flops", "params"):
        _legend(dot, color)
    return dot


def _digraph(spec: Spec, rankdir: str) -> Any:
    """An empty diagram titled with the spec's name and description, in archc's house style."""
    import graphviz

    dot = graphviz.Digraph(name=spec.name, format="svg")
    dot.attr(comment="drawn by archc", rankdir=rankdir, fontname=FONT, fontsize="11", nodesep="0.25", ranksep="0.35",
             label=_esc(f"{spec.name}: {spec.description}" if spec.description else spec.name),
             labelloc="t", fontcolor="#333333", newrank="true")
    dot.attr("node", fontname=FONT, fontsize="10", style="rounded,filled", shape="box", margin="0.12,0.04",
             color="#555555", penwidth="0.8")
    dot.attr("edge", fontname=FONT, fontsize="8", color="#777777", fontcolor="#555555", arrowsize="0.6")
    return dot


def _block_label(units: _Units, u: str) -> str:
    """A collapsed block instance's label: its name, block (with the row's repeat count), input and
    output shapes, params and MACs."""
    g, nodes, inst = units.g, units.members[u], units.spec.instances[u]
    first_inputs = [i for n in nodes for i in g.nodes[n]["inputs"] if i not in nodes]
    in_shape = _shape(g.nodes[first_inputs[0]]["shape"]) if first_inputs else ""
    params = sum(g.nodes[n]["params"].total for n in nodes)
    macs = sum(g.nodes[n]["macs"] for n in nodes)
    times = inst.args.get("repeat", 1)       # a row the table repeats: the paper's "x3"
    block = f"{inst.block} x{times}" if isinstance(times, int) and times > 1 else inst.block
    return (f"{_esc(u.rsplit('/', 1)[-1])}\\n{_esc(block)}\\n{in_shape} -> "
            f"{_shape(g.nodes[units.out_node(u)]['shape'])}\\n{_human(params)} params, {_human(macs)} MACs")


def _node_attrs(units: _Units, u: str, color: str, total: int) -> dict[str, str]:
    """Drawn node ``u``'s graphviz attributes: label, shape and fill (shaded by its share ``total``
    of the cost when ``color`` asks), dashed when only training computes it."""
    g, nodes = units.g, units.members[u]
    if u in units.collapsed:
        label, (shape, fill) = _block_label(units, u), (BLOCK.shape, BLOCK.fill)
    elif u == INPUT:
        label = f"input\\n{_shape(g.nodes[INPUT]['shape'])}"
        style = OPS[g.nodes[INPUT]["op"]].style
        shape, fill = style.shape, style.fill
    else:
        label = _layer_label(g, nodes, units.spec)
        style = OPS[g.nodes[_main(g, nodes)]["op"]].style
        shape, fill = style.shape, style.fill
    if color in ("flops", "params") and u != INPUT:
        share = units.cost(u, color) / (total or 1)
        fill = PALETTE[0 if share == 0 else min(len(PALETTE) - 1, int(share * 100 / 2.5) + 1)]
    attrs = {"label": label, "shape": shape, "fillcolor": fill}
    if fill in PALETTE[6:]:
        attrs["fontcolor"] = "white"          # readable on the darkest shades
    if all(g.nodes[n]["training_only"] for n in nodes):
        attrs["style"] = "rounded,filled,dashed"
        attrs["fontcolor"] = "#666666"
    return attrs


class _Clusters:
    """The drawn nodes placed in clusters, one per expanded block instance, nested as the instances are."""

    def __init__(self, units: _Units, color: str) -> None:
        self.units, self.color = units, color
        g = units.g
        self.total = (sum(g.nodes[n]["macs"] for n in g.nodes) if color == "flops"
                      else sum(g.nodes[n]["params"].total for n in g.nodes))
        self.tree: dict[tuple, list[str]] = {}        # cluster path -> the drawn nodes directly inside it
        for u in units.members:
            self.tree.setdefault(tuple(units.cluster_path(u)), []).append(u)
        self.inside: dict[tuple, list[str]] = {}      # cluster path -> every IR node drawn inside it
        for path, us in self.tree.items():
            for k in range(1, len(path) + 1):
                self.inside.setdefault(path[:k], []).extend(n for u in us for n in units.members[u])

    def label(self, inst_name: str, training: bool) -> str:
        """A cluster's label: the instance's name and its table row's cells (or its block)."""
        spec = self.units.spec
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

    def emit(self, container: Any, path: tuple) -> None:
        """Draw the nodes at cluster ``path`` into ``container``, then its child clusters (in the
        order their first nodes run)."""
        units, g = self.units, self.units.g
        here = self.tree.get(path, [])
        for u in here:
            container.node(_id(u), **_node_attrs(units, u, self.color, self.total))
        if path:     # inside a block: the first layer of every branch on one line
            self._entries_level(container, here)
        children = sorted((p for p in self.inside if len(p) == len(path) + 1 and p[:len(path)] == path),
                          key=lambda p: min(g.nodes[n]["order"] for n in self.inside[p]))
        for child in children:
            training = all(g.nodes[n]["training_only"] for n in self.inside[child])
            with container.subgraph(name="cluster_" + _id(child[-1])) as sub:
                sub.attr(label=self.label(child[-1], training), style="rounded,dashed" if training else "rounded",
                         color="#999999", fontsize="10", labeljust="l", margin="10", fontname=FONT)
                self.emit(sub, child)

    def _entries_level(self, container: Any, here: list[str]) -> None:
        """Rank the drawn nodes that take a tensor from outside the cluster side by side."""
        units, g = self.units, self.units.g
        members = {n for u in here for n in units.members[u]}
        entries = [u for u in here if any(i not in members for n in units.members[u] for i in g.nodes[n]["inputs"])]
        if len(entries) > 1:
            with container.subgraph() as same:
                same.attr(rank="same")
                for u in entries:
                    same.node(_id(u))


def _edges(units: _Units, dot: Any) -> None:
    """One edge per pair of drawn nodes a tensor flows between, labelled with its shape (dashed for
    training only); the inputs an op reads only for their shape are left out: its label names them."""
    g = units.g
    edges = []
    for u, nodes in units.members.items():
        member = set(nodes)
        for n in nodes:
            shape_only = OPS[g.nodes[n]["op"]].shape_inputs(g.nodes[n]["attrs"])
            for k, i in enumerate(g.nodes[n]["inputs"]):
                if i in member or k in shape_only:
                    continue
                edges.append((units.unit(i), u, g.nodes[i]["shape"], g.nodes[n]["training_only"]))
    seen = set()
    for src, dst, shape, training in edges:
        if (src, dst) in seen:
            continue
        seen.add((src, dst))
        attrs = {"label": " " + _shape(shape)}
        if training:
            attrs["style"] = "dashed"
        dot.edge(_id(src), _id(dst), **attrs)


def _legend(dot: Any, color: str) -> None:
    """The shading's key: what share of the network's MACs or parameters each fill stands for."""
    what = "multiply-adds" if color == "flops" else "parameters"
    cells = "".join(f'<TD BGCOLOR="{PALETTE[k]}">{text}</TD>' for k, text in enumerate(LEGEND))
    dot.node("legend", shape="plaintext", style="", fontsize="9", label=(
        f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">'
        f'<TR><TD COLSPAN="{len(LEGEND)}">share of the network\'s {what}</TD></TR><TR>{cells}</TR></TABLE>>'))


View = DrawOptions         # what a drawing shows (archcompiler.options.DrawOptions)


def draw(spec_or_path: Spec | str | Path, output: str | Path | None = None, format: str | None = None,
         view: View = View(), overrides: dict | list | None = None, force: bool = False) -> Drawing:
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
    format = _format(output, format, to_stdout)
    path = Path(output) if output else Path(f"{spec.name}.{format}")
    if isinstance(spec_or_path, (str, Path)) and not to_stdout:
        refuse_inputs(path, [spec_or_path])
    if not output:
        check_default_output(path, force)
    graph = None
    if view.optimized:
        from ..passes.optimize import optimize

        graph = optimize(annotated_graph(spec))
    dot = build_dot(spec, collapse=view.collapse, depth=view.depth, color=view.color, rankdir=view.rankdir, g=graph)
    source = dot.source
    data = source.encode() if format == "dot" else _render(dot, format, path, to_stdout)
    if not to_stdout:
        write_bytes(path, data)
    return Drawing(source, None if to_stdout else path, format, rendered=format != "dot", data=data)


def _format(output: str | Path | None, format: str | None, to_stdout: bool) -> str:
    """The drawing's format: ``format`` if given, else ``output``'s extension (SVG for standard
    output or no output); an extension that names no format is refused rather than guessed."""
    if format is None:
        suffix = "svg" if to_stdout or not output else Path(output).suffix.lstrip(".").lower()
        format = suffix if suffix in FORMATS else "svg"
        if output and suffix not in FORMATS and suffix != "gv":
            raise BackendError([error(f"cannot tell the format from {output!r}", "--format",
                                      hint=f"use one of .{', .'.join(FORMATS)} or give --format")])
    if format not in FORMATS:
        raise BackendError([error(f"unknown format {format!r}", "--format", hint=f"one of {', '.join(FORMATS)}")])
    return format


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
