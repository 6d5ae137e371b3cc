"""Receptive fields, the standard way (Araujo, Norris and Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill 2019).

Per node and per axis: ``size`` r (input pixels one output pixel sees), ``jump`` j (input pixels
between neighbouring output pixels, the effective stride) and ``start`` (centre of the first
output pixel's field, in input pixels; negative inside the padding).  For a window op with kernel
k, stride s, padding p and dilation d:  r' = r + (k - 1) d j,  j' = j s,
start' = start + ((k - 1) d / 2 - p) j.  Where paths meet (concat, add, mul) the largest field is kept, stepping like the
full-size input where another is broadcast (a 1x1 gate). Attention (``OpDef.mixes``) lets every
token see every other: its field is the whole input.
"""

from __future__ import annotations

import networkx as nx

from ..ir import OPS, schedule


def annotate_receptive_field(g: nx.DiGraph) -> nx.DiGraph:
    for n in schedule(g):
        data = g.nodes[n]
        if not data["inputs"]:          # the network's input: each pixel sees itself
            data["rf"] = {"size": (1, 1), "jump": (1, 1), "start": (0.0, 0.0)}
            continue
        # an input read for its shape alone (a resize to another layer's size) gives no pixel to the output
        shape_only = OPS[data["op"]].shape_inputs(data["attrs"])
        read = [i for k, i in enumerate(data["inputs"]) if k not in shape_only]
        fields = [g.nodes[i]["rf"] for i in read]
        if not fields:                  # a constant of the grid (a position encoding): it sees no pixel
            shaped = g.nodes[data["inputs"][0]]["rf"]
            data["rf"] = {"size": (0, 0), "jump": shaped["jump"], "start": shaped["start"]}
            continue
        base = max(fields, key=lambda f: f["size"][0] * f["size"][1])
        # a broadcast input (squeeze-and-excitation's 1x1 gate) widens the field, but the output's
        # pixels step like those of the full-size input
        full = [f for f, i in zip(fields, read) if g.nodes[i]["shape"][1:] == data["shape"][1:]]
        if full and base not in full:
            step = max(full, key=lambda f: f["size"][0] * f["size"][1])
            base = {"size": base["size"], "jump": step["jump"], "start": step["start"]}
        if OPS[data["op"]].mixes:       # attention: every token sees every other, so the whole input
            h, w = g.graph["input"][1:]
            data["rf"] = {"size": (max(h, base["size"][0]), max(w, base["size"][1])), "jump": base["jump"],
                          "start": base["start"]}
            continue
        win = OPS[data["op"]].window(data["attrs"], [g.nodes[i]["shape"] for i in data["inputs"]])
        if win is None:
            data["rf"] = base
            continue
        size, jump, start = [], [], []
        for ax in (0, 1):
            r, j, st = base["size"][ax], base["jump"][ax], base["start"][ax]
            k, s, p, d = win.kernel[ax], win.stride[ax], win.pad[ax], win.dilation[ax]
            size.append(r + (k - 1) * d * j)
            jump.append(j * s)
            start.append(st + ((k - 1) * d / 2 - p) * j)
        data["rf"] = {"size": tuple(size), "jump": tuple(jump), "start": tuple(start)}
    return g
