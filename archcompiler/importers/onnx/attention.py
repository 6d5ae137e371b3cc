"""The attention pattern of nn.MultiheadAttention's nodes (ViT), read back as one archc op when its constants
(the scale, the projections) are the op's; the window attentions are in :mod:`.windows`."""

from __future__ import annotations

from typing import Any

from ...ops import FROM_ONNX
from .fold import _attrs
from .graph import Node, _Graph, _only_reader, _standard

# the ops torch's nn.MultiheadAttention is written as (batch_first: the sequence transposed to S x N x D and
# back; the in-projection, q, k and v split into heads, the scaled product, softmax, the product with v, the
# out-projection)
_ATTENTION_OPS = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Gather", "Mul", "Div", "MatMul", "Softmax", "Add",
                  "Gemm", "Split", "Slice"}
MAX_ATTENTION_NODES = 64


def _attention_step(node: Any, ctx: _Graph) -> bool:
    """ViT's self-attention (torch's nn.MultiheadAttention, batch_first, as the exporter writes it): from
    the Transpose 1 0 2 of a 1 x S x D sequence to the Transpose 1 0 2 back to 1 x S x D, every node in
    between one of _ATTENTION_OPS that reads only values of the pattern and constants, with one
    in-projection (a D x 3D matrix and a 3D bias), one softmax over the last axis of 1 x heads x S x S,
    the scale 1 / sqrt(D / heads) as constant factors and one out-projection (D x D and D): one
    ``self_attention`` layer."""

    if node.op_type != "Transpose" or not node.input or node.input[0] not in ctx.value_of \
            or list(_attrs(node).get("perm", [])) != [1, 0, 2]:
        return False
    src = node.input[0]
    full = ctx.shapes.get(src, ())
    if len(full) != 3 or full[0] != 1 or src in ctx.last:
        return False
    seq, dim = full[1], full[2]
    found = _attention_region(node, ctx, seq, dim)
    if found is None:
        return False
    region, exit_node = found
    products = [(r, _weight_of(ctx, r)) for r in region if r.op_type in ("MatMul", "Gemm")
                and _weight_of(ctx, r) is not None]
    softmax = [r for r in region if r.op_type == "Softmax"]
    if len(products) != 2 or len(softmax) != 1 or _attrs(softmax[0]).get("axis", -1) not in (-1, 3):
        return False
    scores = ctx.shapes.get(softmax[0].output[0], ())
    if len(scores) != 4 or scores[0] != 1 or scores[2:] != (seq, seq) or dim % scores[1]:
        return False
    heads = scores[1]
    params = _projections(ctx, products, dim)
    if params is None or abs(_scale_of(ctx, region) * (dim // heads) ** 0.5 - 1) > 1e-5:
        return False
    for r in region:
        ctx.skip.add(id(r))
    ctx.skip.discard(id(node))
    order = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    ctx.emit(exit_node, exit_node.output[0],
             FROM_ONNX["pattern:attention"].layer(Node(exit_node.name, {"heads": heads}, [], [], ())),
             [ctx.value_of[src]], {k: params[k] for k in order}, ctx.shape(src))
    return True


def _attention_region(node: Any, ctx: _Graph, seq: int, dim: int) -> tuple[list[Any], Any] | None:
    """The nodes read from the Transpose ``node`` up to the one Transpose 1 0 2 back to 1 x ``seq`` x ``dim``
    (the region, that exit), each of _ATTENTION_OPS and reading only the region's values and constants (a
    node that computes a constant, a size read, is not the region's); None where the nodes are no such region
    or more than MAX_ATTENTION_NODES."""
    inside, region, exits = {node.output[0]}, [], []
    frontier = [node.output[0]]
    seen: set[int] = {id(node)}
    while frontier:
        value = frontier.pop()
        for r in ctx.readers.get(value, []):
            if id(r) in seen or r.output and all(o in ctx.consts for o in r.output):    # (a size read: a constant)
                continue
            seen.add(id(r))
            region.append(r)
            if len(region) > MAX_ATTENTION_NODES or r.op_type not in _ATTENTION_OPS or not _standard(r):
                return None
            if r.op_type == "Transpose" and list(_attrs(r).get("perm", [])) == [1, 0, 2] \
                    and ctx.shapes.get(r.output[0]) == (1, seq, dim):
                exits.append(r)
                continue
            inside.update(r.output)
            frontier.extend(r.output)
    if len(exits) != 1 or any(i and i not in inside and i not in ctx.consts for r in region for i in r.input):
        return None
    return region, exits[0]


def _weight_of(ctx: _Graph, r: Any) -> tuple[str, Any] | None:
    """The constant matrix a MatMul or Gemm multiplies by (its second input: name and value), or None."""
    consts = [(i, ctx.consts[i]) for i in r.input[1:2] if i in ctx.consts]
    return consts[0] if consts and getattr(consts[0][1], "ndim", 0) == 2 else None


def _projections(ctx: _Graph, products: list[tuple[Any, tuple[str, Any]]],
                 dim: int) -> dict[str, tuple[str, Any]] | None:
    """nn.MultiheadAttention's four parameters (in torch's layout, out x in) from its two products by a
    constant: the in-projection (3D x D) and the out-projection (D x D), each with its bias (a Gemm's, the
    Add that reads a MatMul, or zeros where the exporter dropped a zero one); None where they are not so."""
    params: dict[str, tuple[str, Any]] = {}
    for r, (init, w) in products:
        gemm = r.op_type == "Gemm"
        a = _attrs(r)
        if gemm and (a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0)):
            return None
        w = w if gemm and a.get("transB", 0) else w.T          # torch's layout: out x in
        names = {(3 * dim, dim): ("in_proj_weight", "in_proj_bias"), (dim, dim): ("out_proj.weight", "out_proj.bias")}
        if w.shape not in names or names[w.shape][0] in params:
            return None
        bias = (r.input[2], ctx.consts.get(r.input[2])) if gemm and len(r.input) > 2 and r.input[2] else None
        add = _only_reader(ctx, r.output[0], "Add") if not gemm else None
        if add is not None:
            bias = next(((i, ctx.consts[i]) for i in add.input if i in ctx.consts), None)
        elif (len(r.input) < 3 or not r.input[2]) if gemm else \
                not any(a.op_type == "Add" for a in ctx.readers.get(r.output[0], [])):
            import numpy as np  # no bias (the exporter drops a zero one): zeros

            bias = ("", np.zeros(w.shape[0], dtype=w.dtype))
        if bias is None or bias[1] is None or tuple(bias[1].shape) != (w.shape[0],):
            return None
        params[names[w.shape][0]], params[names[w.shape][1]] = (init, w), bias
    return params if len(params) == 4 else None


def _scale_of(ctx: _Graph, region: list[Any]) -> float:
    """The product of the region's scalar constant factors (a Mul's, or a Div's divisor inverted)."""
    scale = 1.0
    for r in region:
        for i in r.input[1:] if r.op_type == "Div" else r.input:
            v = ctx.consts.get(i) if r.op_type in ("Mul", "Div") else None
            if v is not None and getattr(v, "size", 0) == 1:
                scale *= float(v.reshape(-1)[0]) ** (-1 if r.op_type == "Div" else 1)
    return scale
