"""Memory layout: channels-last (NHWC) for networks of convolutions.

On CPUs (oneDNN) and on GPUs with tensor cores, convolutions run faster on channels-last tensors;
the module then keeps its weights and activations in that layout and converts its input once.
"""

from __future__ import annotations

import networkx as nx

from ...ir import OPS
from ._rewrite import fresh, record


def choose_layout(g: nx.DiGraph) -> nx.DiGraph:
    g = fresh(g)
    convs = sum(1 for _, d in g.nodes(data=True) if OPS[d["op"]].channels_last)
    if convs:
        g.graph["memory_format"] = "channels_last"
        record(g, "choose_layout", memory_format="channels_last")
    return g
