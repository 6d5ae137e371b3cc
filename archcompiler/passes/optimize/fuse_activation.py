"""Fusing an activation into the convolution before it: one kernel instead of two passes over the
feature map (on CPU, oneDNN's post-op; elsewhere the backend applies the activation in place).

Fires for a fusable activation (its op's ``fusable``: ReLU) after a
convolution with numeric padding that nothing else reads and that is no model output.
"""

from __future__ import annotations

import networkx as nx

from ...ir import OPS
from ._rewrite import bypass, fresh, is_output, readers, record


def fuse_activation(g: nx.DiGraph) -> nx.DiGraph:
    g = fresh(g)
    fused = []
    for act in [n for n, d in g.nodes(data=True) if OPS[d["op"]].fusable(d["attrs"])]:
        (conv,) = g.nodes[act]["inputs"]
        cd = g.nodes[conv]
        if "activation" not in OPS[cd["op"]].fuses or readers(g, conv) != [act] or is_output(g, conv) or cd["attrs"].get("act") \
                or isinstance(cd["attrs"]["padding"], str):
            continue
        cd["attrs"] = {**cd["attrs"], "act": g.nodes[act]["attrs"]["kind"]}
        bypass(g, act)
        fused.append(act)
    if fused:
        record(g, "fuse_activation", removed=sorted(fused))
    return g
