"""Horizontal fusion: sibling 1x1 convolutions that read the same tensor become one convolution
whose output channels are theirs side by side (TensorRT's and TVM's CombineParallelConv2D); each
original node becomes a ``channel_slice`` of it (a view). In an inception module the #1x1, #3x3
reduce and #5x5 reduce convolutions fuse (176 channels in 3a, 624 in 5b).

Fires for groups of two or more convolutions with kernel 1x1, stride 1, no padding, no dilation,
no groups, the same bias and fused activation, that are no model outputs. Not in the default
pipeline, because measurement (benchmarks/inference.py) shows it pays only for small batches: on a
2-core CPU, GoogLeNet ran 5% faster at batch 1, the same at batch 8 and 5% slower at batch 32 (the
slices of a channels-last tensor are strided views the next convolutions must read). Ask for it by
name: ``build(spec, optimize=[..., "fuse_siblings", ...])``.
"""

from __future__ import annotations

import networkx as nx

from ...ir import OPS
from ...ir.lower import invalidate_schedule
from ._rewrite import fresh, is_output, readers, record


def _key(attrs: dict) -> tuple | None:
    if tuple(attrs["kernel"]) != (1, 1) or tuple(attrs["stride"]) != (1, 1) or attrs["padding"] not in ((0, 0),) \
            or tuple(attrs["dilation"]) != (1, 1) or attrs["groups"] != 1:
        return None
    return attrs["bias"], attrs.get("act")


def _channel_view() -> str:
    """The IR kind that is channels [start, end) of its input as a view (by its facts, from the registry)."""
    return next(k.kind for k in OPS.values() if k.alias == "view" and k.attrs == ("start", "end"))


def fuse_siblings(g: nx.DiGraph) -> nx.DiGraph:
    g = fresh(g)
    fused = []
    for source in list(g.nodes):
        groups: dict[tuple, list[str]] = {}
        for r in readers(g, source):
            d = g.nodes[r]
            if "siblings" in OPS[d["op"]].fuses and not is_output(g, r) and d["inputs"] == [source]:
                key = _key(d["attrs"])
                if key is not None:
                    groups.setdefault(key, []).append(r)
        for members in groups.values():
            if len(members) < 2:
                continue
            members.sort(key=lambda n: g.nodes[n]["order"])
            first = g.nodes[members[0]]
            name = f"{members[0]}+siblings"
            siblings, start = [], 0
            for m in members:
                width = g.nodes[m]["attrs"]["out_channels"]
                siblings.append({"node": m, "start": start, "end": start + width, "attrs": dict(g.nodes[m]["attrs"])})
                start += width
            attrs = {**first["attrs"], "out_channels": start, "siblings": siblings}
            attrs.pop("folded_bn", None)
            g.add_node(name, **{**first, "attrs": attrs, "inputs": [source], "order": first["order"] - 0.5,
                                "role": "fused"})
            g.add_edge(source, name)
            for s in siblings:
                m = s["node"]
                g.remove_edge(source, m)
                g.add_edge(name, m)
                g.nodes[m].update(op=_channel_view(), attrs={"start": s["start"], "end": s["end"]}, inputs=[name])
            fused.append(members)
    invalidate_schedule(g)
    if fused:
        record(g, "fuse_siblings", groups=fused)
    return g
