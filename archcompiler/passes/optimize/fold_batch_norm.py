"""Folding BatchNorm into the convolution before it (inference).

In eval mode BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * gamma +
beta``, so ``bn(conv(x))`` is one convolution with scaled weights and a bias. The pass fires only
where that is exact: a BatchNorm whose input is a convolution that nothing else reads and that is
no model output. The weights are folded when the module is built (:func:`fold_weights`).
"""

from __future__ import annotations

import networkx as nx

from ...ir import OPS
from ._rewrite import bypass, fresh, is_output, readers, record


def fold_batch_norm(g: nx.DiGraph) -> nx.DiGraph:
    g = fresh(g)
    folded = {}
    for bn in [n for n, d in g.nodes(data=True) if OPS[d["op"]].eval_affine]:
        (conv,) = g.nodes[bn]["inputs"]
        cd = g.nodes[conv]
        if "affine" not in OPS[cd["op"]].fuses or readers(g, conv) != [bn] or is_output(g, conv):
            continue
        cd["attrs"] = {**cd["attrs"], "bias": True, "folded_bn": {"node": bn, "eps": g.nodes[bn]["attrs"]["eps"],
                                                                   "had_bias": cd["attrs"]["bias"]}}
        bypass(g, bn)
        folded[conv] = bn
    if folded:
        record(g, "fold_batch_norm", removed=sorted(folded.values()), into=sorted(folded))
    return g


def fold_weights(conv_weight, conv_bias, bn_weight, bn_bias, mean, var, eps):
    """The folded convolution's weight and bias (torch tensors in, torch tensors out)."""
    scale = bn_weight / (var + eps).sqrt()
    weight = conv_weight * scale.reshape(-1, *([1] * (conv_weight.dim() - 1)))
    bias = ((conv_bias if conv_bias is not None else 0) - mean) * scale + bn_bias
    return weight, bias
