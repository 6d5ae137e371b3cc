"""Generating PyTorch source from the annotated IR.

The result is one standalone Python module that depends only on torch: a class whose submodules
are named as the spec names its layers, whose ``forward`` runs the graph in schedule order with a
``# N x C x H x W`` comment after every op (the style of torchvision's googlenet.py), plus the
spec's losses, initialisation and ``predict_proba``.  ``archc build`` executes this same source,
so what ``--emit python`` writes is exactly what runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ...errors import BackendError, error
from ...ir import OPS
from ...ir.plan import Plan, plan
from ...spec import Spec
from .naming import RESERVED_VARIABLES, attr_expr, identifier, module_paths, variable
from .runtime import (
    PatchMerging,
    WindowAttention,
    _log1m_softmax,
    check_input,
    conv_act,
    helper_source,
    spec_loss,
    stochastic_depth,
)
from .verify import check_source

# ----------------------------------------------------------------------------- the op table
# kind -> (constructor of the module, or None for a functional op) and the call expression.


def _t(pair: Any) -> str:
    return f"({pair[0]}, {pair[1]})"


def _conv_module(a: dict, ins: list, out: tuple) -> str:
    pad = f'"{a["padding"]}"' if isinstance(a["padding"], str) else _t(a["padding"])
    extra = ""
    if tuple(a["dilation"]) != (1, 1):
        extra += f", dilation={_t(a['dilation'])}"
    if a["groups"] != 1:
        extra += f", groups={a['groups']}"
    return (f"nn.Conv2d({ins[0][0]}, {a['out_channels']}, kernel_size={_t(a['kernel'])}, "
            f"stride={_t(a['stride'])}, padding={pad}{extra}, bias={a['bias']})")


def _pool_call(fn: str) -> Callable[..., str]:
    def call(a: dict, x: list[str], mod: str, inplace: bool) -> str:
        extra = ", ceil_mode=True" if a["ceil_mode"] else ""
        if not a.get("count_include_pad", True):     # average pooling's option
            extra += ", count_include_pad=False"
        return (f"F.{fn}({x[0]}, kernel_size={_t(a['kernel'])}, stride={_t(a['stride'])}, "
                f"padding={_t(a['padding'])}{extra})")
    return call


_ACT = {
    "relu": "F.relu({x}, inplace={inplace})", "relu6": "F.relu6({x}, inplace={inplace})",
    "leaky_relu": "F.leaky_relu({x}, inplace={inplace})", "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})", "gelu": "F.gelu({x})", "silu": "F.silu({x}, inplace={inplace})",
    "hardswish": "F.hardswish({x}, inplace={inplace})", "hardsigmoid": "F.hardsigmoid({x})",
}


@dataclass(frozen=True)
class TorchOp:
    module: Callable[[dict, list, tuple], str] | None
    call: Callable[[dict, list[str], str, bool], str]
    helper: Callable | None = None      # a function of runtime.py the call uses (the module gets its text)
    sequence_call: Callable[[dict, list[str], str, bool], str] | None = None   # the call on a sequence input

    def call_on(self, attrs: dict, xs: list[str], module: str, inplace: bool, ins: list) -> str:
        """The call for these input shapes: ``sequence_call`` where the first input is a sequence."""
        if self.sequence_call is not None and ins and len(ins[0]) == 2:
            return self.sequence_call(attrs, xs, module, inplace)
        return self.call(attrs, xs, module, inplace)


def _per_feature(ins: list, out: tuple) -> int:
    """The features a per-position module holds: an image's channels, a token's dimension."""
    return out[-1] if len(out) == 2 else out[0]


TORCH_OPS: dict[str, TorchOp] = {
    "input": TorchOp(None, lambda a, x, m, ip: "x"),          # forward()'s argument
    "conv2d": TorchOp(_conv_module, lambda a, x, m, ip: f"conv_act({x[0]}, {m}, {a['act']!r})" if a.get("act")
                      else f"{m}({x[0]})"),
    "batch_norm2d": TorchOp(lambda a, ins, out: f"nn.BatchNorm2d({out[0]}, eps={a['eps']}, momentum={a['momentum']})",
                            lambda a, x, m, ip: f"{m}({x[0]})"),
    "linear": TorchOp(lambda a, ins, out: f"nn.Linear({ins[0][-1]}, {a['out_features']}, bias={a['bias']})",
                      lambda a, x, m, ip: f"{m}({x[0]})"),
    # over an image's channels: the channels-last view and back (as torchvision's ConvNeXt permutes)
    "channel_linear": TorchOp(lambda a, ins, out: f"nn.Linear({ins[0][0]}, {a['out_features']}, bias={a['bias']})",
                              lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)"),
    "layer_norm2d": TorchOp(lambda a, ins, out: f"nn.LayerNorm({_per_feature(ins, out)}, eps={a['eps']})",
                            lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)",
                            sequence_call=lambda a, x, m, ip: f"{m}({x[0]})"),
    "layer_scale": TorchOp(lambda a, ins, out: f"nn.Parameter(torch.full(({out[0]}, 1, 1), {a['init']!r}))",
                           lambda a, x, m, ip: f"{m} * {x[0]}"),
    "activation": TorchOp(None, lambda a, x, m, ip: _ACT[a["kind"]].format(x=x[0], inplace=ip)),
    "max_pool2d": TorchOp(None, _pool_call("max_pool2d")),
    "avg_pool2d": TorchOp(None, _pool_call("avg_pool2d")),
    "adaptive_avg_pool2d": TorchOp(None, lambda a, x, m, ip: f"F.adaptive_avg_pool2d({x[0]}, {_t(a['output'])})"),
    "lrn": TorchOp(None, lambda a, x, m, ip: f"F.local_response_norm({x[0]}, size={a['size']}, "
                                             f"alpha={a['alpha']!r}, beta={a['beta']!r}, k={a['k']!r})"),
    "dropout": TorchOp(None, lambda a, x, m, ip: f"F.dropout({x[0]}, p={a['p']!r}, training=self.training)"),
    "stochastic_depth": TorchOp(None, lambda a, x, m, ip: f"stochastic_depth({x[0]}, {a['p']!r}, "
                                                          f"{a['mode'] == 'row'}, self.training)", stochastic_depth),
    "flatten": TorchOp(None, lambda a, x, m, ip: f"torch.flatten({x[0]}, 1)"),
    "softmax": TorchOp(None, lambda a, x, m, ip: f"F.softmax({x[0]}, dim=1)"),
    "concat": TorchOp(None, lambda a, x, m, ip: f"torch.cat([{', '.join(x)}], 1)"),
    "add": TorchOp(None, lambda a, x, m, ip: x[0] + "".join(f".add_({y})" for y in x[1:]) if ip else " + ".join(x)),
    "mul": TorchOp(None, lambda a, x, m, ip: " * ".join(x)),
    "identity": TorchOp(None, lambda a, x, m, ip: x[0]),
    "channel_slice": TorchOp(None, lambda a, x, m, ip: f"{x[0]}[:, {a['start']}:{a['end']}]"),
    "channel_split": TorchOp(None, lambda a, x, m, ip: f"{x[0]}.chunk(2, 1)[{a['half']}]"),
    # torchvision's channel_shuffle: view as (N, groups, C / groups, H, W), transpose, copy, view back
    "channel_shuffle": TorchOp(None, lambda a, x, m, ip: f"{x[0]}.unflatten(1, ({a['groups']}, -1))"
                                                        f".transpose(1, 2).flatten(1, 2)"),
    # tokens: torchvision's conv_proj, its N x D x H' x W' map flattened and transposed to N x S x D
    "patch_embed": TorchOp(lambda a, ins, out: f"nn.Conv2d({ins[0][0]}, {a['out_channels']}, "
                                               f"kernel_size={_t((a['patch'],) * 2)}, stride={_t((a['patch'],) * 2)}, "
                                               f"bias={a['bias']})",
                           lambda a, x, m, ip: f"{m}({x[0]}).flatten(2).transpose(1, 2)"),
    "class_token": TorchOp(lambda a, ins, out: f"nn.Parameter(torch.zeros(1, 1, {out[1]}))",
                           lambda a, x, m, ip: f"torch.cat([{m}.expand({x[0]}.shape[0], -1, -1), {x[0]}], dim=1)"),
    "pos_embedding": TorchOp(lambda a, ins, out: f"nn.Parameter(torch.empty(1, {out[0]}, {out[1]}).normal_(std=0.02))",
                             lambda a, x, m, ip: f"{x[0]} + {m}"),
    # as torchvision's EncoderBlock calls it (its fused path in evaluation, scaled_dot_product_attention otherwise)
    "self_attention": TorchOp(lambda a, ins, out: f"nn.MultiheadAttention({out[1]}, {a['heads']}, "
                                                  f"dropout={a['dropout']!r}, batch_first=True)",
                              lambda a, x, m, ip: f"{m}({x[0]}, {x[0]}, {x[0]}, need_weights=False)[0]"),
    "select_token": TorchOp(None, lambda a, x, m, ip: f"{x[0]}[:, {a['index']}]"),
    # Swin: modules over the channels-last view of the map (torchvision keeps N x H x W x C throughout)
    "window_attention": TorchOp(lambda a, ins, out: f"WindowAttention({out[0]}, {a['heads']}, {a['window']}, {a['shift']}, "
                                                    f"{a['pad']}, {a['cosine']}, {a['dropout']!r}, {out[1]}, {out[2]}, "
                                                    f"{a['grid']}, {a['layout'] == 'maxvit'})",
                                lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)", WindowAttention),
    "patch_merging": TorchOp(lambda a, ins, out: f"PatchMerging({ins[0][0]}, {out[0]}, {a['norm'] == 'after'}, {a['eps']!r})",
                             lambda a, x, m, ip: f"{m}({x[0]}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)", PatchMerging),
}


# ----------------------------------------------------------------------------- the reverse table: torch -> spec
# ``archc import`` (archcompiler/importers/torch.py) maps each call torch.fx records through this table: the
# key is a module's class name, ``fn:NAME`` for a function (torch.*, F.*, operator.*) or ``method:NAME`` for a
# tensor method. ``kind`` is the op of the op table it becomes (the key of TORCH_OPS that emits it back);
# ``layer`` turns what was called into the spec layer's fields, or raises Unmappable saying why.


class Unmappable(ValueError):
    """A call the reverse table has, with arguments archc has no op for (the message says which)."""


@dataclass(frozen=True)
class Seen:
    """One call as torch.fx traced it: the module (for a module call), the call's other arguments
    bound to their names (``arg``), and the per-sample shapes of its tensor inputs and output."""

    module: Any
    arg: dict[str, Any]
    shapes: list[tuple[int, ...]]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FromTorch:
    kind: str                                   # the op of the op table (a key of TORCH_OPS)
    layer: Callable[[Seen], dict | None]        # the spec layer's fields (op: ...), None where the call
    #                                             gives its input back (no layer), or Unmappable
    params: tuple[str, ...] = ()                # a function's arguments after its tensor inputs, in order


def _one(value: Any) -> Any:
    """(3, 3) -> 3; [3, 5] stays a pair; a number stays."""
    if isinstance(value, (tuple, list)):
        value = [int(v) for v in value]
        return value[0] if len(set(value)) == 1 else value
    return int(value) if not isinstance(value, (bool, str)) else value


def _need(ok: bool, why: str) -> None:
    if not ok:
        raise Unmappable(why)


def _conv_in(s: Seen) -> dict:
    m = s.module
    _need(m.padding_mode == "zeros", f"padding_mode {m.padding_mode!r} (archc pads with zeros)")
    return {"op": "conv", "out": m.out_channels, "kernel": _one(m.kernel_size), "stride": _one(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else _one(m.padding), "dilation": _one(m.dilation),
            "groups": m.groups, "bias": m.bias is not None}


def _bn_in(s: Seen) -> dict:
    m = s.module
    _need(m.affine and m.track_running_stats and m.momentum is not None,
          "a BatchNorm2d without affine parameters, running statistics or a momentum")
    return {"op": "batch_norm", "eps": m.eps, "momentum": m.momentum}


def _linear_in(s: Seen) -> dict:
    if len(s.shapes[0]) == 2 and not s.arg.get("channels_last"):      # a sequence: each token's features
        return {"op": "linear", "out": s.module.out_features, "bias": s.module.bias is not None, "over": "tokens"}
    if s.arg.get("channels_last"):          # x.permute(0, 2, 3, 1) before it: over each position's channels
        return {"op": "linear", "out": s.module.out_features, "bias": s.module.bias is not None, "over": "channels"}
    _need(len(s.shapes[0]) == 1, f"a Linear over a {len(s.shapes[0]) + 1}-d tensor (archc's linear reads a "
                                 "flat vector, or an image's channels after x.permute(0, 2, 3, 1))")
    return {"op": "linear", "out": s.module.out_features, "bias": s.module.bias is not None}


def _layer_norm_in(s: Seen) -> dict:
    m = s.module
    channels_first = type(m).__name__ == "LayerNorm2d"       # torchvision's ConvNeXt: it permutes inside
    if len(s.shapes[0]) == 2 and not s.arg.get("channels_last"):      # a sequence: each token's features
        _need(tuple(m.normalized_shape) == (s.shapes[0][-1],) and m.elementwise_affine and m.bias is not None,
              "a LayerNorm without its per-feature weight and bias")
        return {"op": "layer_norm", "eps": m.eps}
    _need(channels_first or s.arg.get("channels_last"), "a LayerNorm over other dims than an image's channels "
                                                        "(archc's layer_norm normalises each position's channels)")
    _need(tuple(m.normalized_shape) == (s.shapes[0][0],) and m.elementwise_affine and m.bias is not None,
          "a LayerNorm without its per-channel weight and bias")
    return {"op": "layer_norm", "eps": m.eps}


def _act_in(kind: str) -> Callable[[Seen], dict]:
    def layer(s: Seen) -> dict:
        slope = s.arg.get("negative_slope", getattr(s.module, "negative_slope", 0.01))
        _need(slope == 0.01, f"negative_slope {slope} (archc's leaky_relu has PyTorch's default, 0.01)")
        approx = s.arg.get("approximate", getattr(s.module, "approximate", "none"))
        _need(approx == "none", f"approximate={approx!r} (archc's gelu is the exact one)")
        return {"op": kind}
    return layer


def _pool_in(name: str) -> Callable[[Seen], dict]:
    def layer(s: Seen) -> dict:
        a = {k: getattr(s.module, k) for k in ("kernel_size", "stride", "padding", "ceil_mode", "dilation",
                                               "count_include_pad", "divisor_override", "return_indices")
             if hasattr(s.module, k)} if s.module is not None else dict(s.arg)
        _need(_one(a.get("dilation", 1)) == 1, "a dilated pooling")
        _need(not a.get("return_indices") and a.get("divisor_override") is None,
              "return_indices or divisor_override")
        out = {"op": name, "kernel": _one(a["kernel_size"]),
               "stride": _one(a.get("stride") or a["kernel_size"]), "padding": _one(a.get("padding", 0))}
        if a.get("ceil_mode"):
            out["ceil_mode"] = True
        if not a.get("count_include_pad", True):
            out["count_include_pad"] = False
        return out
    return layer


def _adaptive_in(s: Seen) -> dict:
    size = s.module.output_size if s.module is not None else s.arg["output_size"]
    size = [s.shape[1 + i] if v is None else int(v) for i, v in enumerate(size)] if isinstance(size, (tuple, list)) \
        else [int(size)] * 2
    return {"op": "global_avg_pool"} if size == [1, 1] else {"op": "adaptive_avg_pool", "output": _one(size)}


def _lrn_in(s: Seen) -> dict:
    a = vars(s.module) if s.module is not None else s.arg
    return {"op": "lrn", "size": int(a["size"]), "alpha": float(a.get("alpha", 1e-4)),
            "beta": float(a.get("beta", 0.75)), "k": float(a.get("k", 1.0))}


def _flatten_in(s: Seen) -> dict:
    start = getattr(s.module, "start_dim", s.arg.get("start_dim", 0 if s.module is None else 1))
    end = getattr(s.module, "end_dim", s.arg.get("end_dim", -1))
    _need(start == 1 and end == -1, f"flatten({start}, {end}) (archc flattens all but the batch: flatten(x, 1))")
    return {"op": "flatten"}


def _softmax_in(s: Seen) -> dict:
    dim = getattr(s.module, "dim", None) if s.module is not None else s.arg.get("dim")
    _need(dim in (1, -1 if len(s.shape) == 1 else 1), f"softmax over dim {dim} (archc's is over the channels)")
    return {"op": "softmax"}


def _dropout_in(s: Seen) -> dict | None:
    p = s.module.p if s.module is not None else s.arg.get("p", 0.5)
    return {"op": "dropout", "p": float(p)} if p else None      # p 0: the input, in training too


def _join_in(name: str, same_shape: bool) -> Callable[[Seen], dict]:
    def layer(s: Seen) -> dict:
        _need(len(s.shapes) >= 2, f"an operation with a constant (archc's {name} joins two layers)")
        _need(not same_shape or all(sh == s.shape for sh in s.shapes), f"a {name} of tensors of different shapes")
        _need(same_shape or len(s.shapes) == 2, f"a {name} of more than two tensors")
        return {"op": name}
    return layer


def _cat_in(s: Seen) -> dict:
    _need(s.arg.get("dim", 0) == 1, f"a concatenation along dim {s.arg.get('dim', 0)} (archc's is along channels)")
    return {"op": "concat"} if len(s.shapes) > 1 else None      # torch.cat([x], 1) is x (DenseNet)


def _mean_in(s: Seen) -> dict:
    dims = s.arg.get("dim")
    dims = sorted(int(d) % 4 for d in (dims if isinstance(dims, (list, tuple)) else [dims])) if dims is not None else []
    _need(dims == [2, 3] and len(s.shapes[0]) == 3, f"a mean over dims {s.arg.get('dim')} (archc's global_avg_pool "
                                                    "averages height and width)")
    return {"op": "global_avg_pool"}      # x.mean([2, 3]) (MNASNet): the same numbers, as C x 1 x 1


def _attention_in(s: Seen) -> dict:
    m = s.module
    _need(m.batch_first and m._qkv_same_embed_dim and m.in_proj_bias is not None and m.bias_k is None
          and not m.add_zero_attn, "a MultiheadAttention other than torchvision's (batch_first, one in_proj with "
                                   "bias, no bias_k / add_zero_attn)")
    _need(s.arg.get("need_weights") is False and len(s.shapes) == 1 and not s.arg.get("attn_mask"),
          "attention other than self-attention (query, key and value the same tensor, need_weights=False, no mask)")
    out = {"op": "self_attention", "heads": m.num_heads}
    if m.dropout:
        out["dropout"] = float(m.dropout)
    return out


def _select_in(s: Seen) -> dict:
    index = s.arg.get("index")
    ok = isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) and isinstance(index[1], int)
    _need(ok and len(s.shapes) == 1 and len(s.shapes[0]) == 2 and index[1] >= 0,
          f"indexing with {index!r} (archc's select_token is x[:, i] of a sequence)")
    return {"op": "select_token", "index": index[1]}


def _stochastic_depth_in(s: Seen) -> dict:
    p = s.module.p if s.module is not None else s.arg["p"]
    mode = s.module.mode if s.module is not None else s.arg.get("mode", "row")
    return {"op": "stochastic_depth", "p": float(p), "mode": "row" if mode in ("row", True) else "batch"}


def _square(value: Any, what: str) -> int:
    v = _one(value)
    _need(isinstance(v, int), f"a {what} of {list(value)} (archc's windows are square)")
    return v


def _swin_attention_in(s: Seen) -> dict:
    """torchvision's ShiftedWindowAttention (V2: its logit_scale and cpb_mlp) on a channels-last map."""
    m = s.module
    _need(m.qkv.bias is not None and m.proj.bias is not None and not m.dropout,
          "window attention without the qkv or proj bias, or with dropout after the projection")
    out = {"op": "window_attention", "heads": m.num_heads, "window": _square(m.window_size, "window"),
           "shift": _square(m.shift_size, "shift"), "pad": True}
    if hasattr(m, "logit_scale"):
        out["cosine"] = True
    if m.attention_dropout:
        out["dropout"] = float(m.attention_dropout)
    return out


def _own_attention_in(s: Seen) -> dict:
    """archc's own WindowAttention (runtime.py, as a built spec holds it): its fields back from its
    attributes (the shift it applies: none along a side the window covers whole)."""
    m = s.module
    out = {"op": "window_attention", "heads": m.heads, "window": m.window, "shift": max(m.shift),
           "pad": not m.maxvit or list(m.padded) != list(m.size)}
    out.update({k: True for k in ("cosine", "grid") if getattr(m, k)})
    if m.maxvit:
        out["layout"] = "maxvit"
    if m.dropout:
        out["dropout"] = float(m.dropout)
    return out


def _partition_attention_in(s: Seen) -> dict:
    """torchvision's MaxViT RelativePositionalMultiHeadAttention on a map cut into windows or a grid
    (the importer's partition steps say which: ``s.arg["partition"]``)."""
    m = s.module
    part = s.arg.get("partition")
    _need(part is not None, "attention on a tensor that is not a map cut into windows or a grid by "
                            "MaxViT's WindowPartition")
    grid, p = part
    _need(m.size * m.size == m.max_seq_len and m.to_qkv.bias is not None and m.merge.bias is not None
          and m.n_heads * m.head_dim == s.shape[0] and (grid or p == m.size) and (not grid or p * m.size == s.shape[1]),
          "relative attention whose windows are not the partition's")
    out = {"op": "window_attention", "heads": m.n_heads, "window": m.size, "layout": "maxvit"}
    if grid:
        out["grid"] = True
    return out


def _patch_merging_in(s: Seen) -> dict:
    """torchvision's PatchMerging (the LayerNorm before the reduction) and PatchMergingV2 (after it), and
    archc's own, told apart by the LayerNorm's size."""
    m = s.module
    out_ch = m.reduction.out_features
    norm = m.norm
    _need(m.reduction.bias is None and type(norm).__name__ == "LayerNorm" and norm.elementwise_affine
          and norm.bias is not None and tuple(norm.normalized_shape) in ((out_ch,), (m.reduction.in_features,)),
          "patch merging other than torchvision's (a Linear without bias and a LayerNorm)")
    out = {"op": "patch_merging", "out": out_ch, "eps": norm.eps}
    if tuple(norm.normalized_shape) == (out_ch,):
        out["norm"] = "after"
    return out


_ACT_KINDS = {"ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh",
              "GELU": "gelu", "SiLU": "silu", "Hardswish": "hardswish", "Hardsigmoid": "hardsigmoid"}

FROM_TORCH: dict[str, FromTorch] = {
    "Conv2d": FromTorch("conv2d", _conv_in),
    "BatchNorm2d": FromTorch("batch_norm2d", _bn_in),
    "Linear": FromTorch("linear", _linear_in),
    "LayerNorm": FromTorch("layer_norm2d", _layer_norm_in),
    "LayerNorm2d": FromTorch("layer_norm2d", _layer_norm_in),
    # a C x 1 x 1 parameter times the map (ConvNeXt's layer_scale): the parameter is the layer
    "param:mul": FromTorch("layer_scale", lambda s: {"op": "layer_scale"}),
    **{cls: FromTorch("activation", _act_in(kind)) for cls, kind in _ACT_KINDS.items()},
    **{f"fn:{kind}": FromTorch("activation", _act_in(kind), ("inplace",)) for kind in _ACT_KINDS.values()},
    **{f"method:{kind}": FromTorch("activation", _act_in(kind)) for kind in ("relu", "sigmoid", "tanh")},
    "fn:leaky_relu": FromTorch("activation", _act_in("leaky_relu"), ("negative_slope", "inplace")),
    "fn:gelu": FromTorch("activation", _act_in("gelu"), ("approximate",)),
    "MaxPool2d": FromTorch("max_pool2d", _pool_in("max_pool")),
    "fn:max_pool2d": FromTorch("max_pool2d", _pool_in("max_pool"),
                               ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    "AvgPool2d": FromTorch("avg_pool2d", _pool_in("avg_pool")),
    "fn:avg_pool2d": FromTorch("avg_pool2d", _pool_in("avg_pool"), ("kernel_size", "stride", "padding", "ceil_mode",
                                                                    "count_include_pad", "divisor_override")),
    "AdaptiveAvgPool2d": FromTorch("adaptive_avg_pool2d", _adaptive_in),
    "fn:adaptive_avg_pool2d": FromTorch("adaptive_avg_pool2d", _adaptive_in, ("output_size",)),
    "LocalResponseNorm": FromTorch("lrn", _lrn_in),
    "fn:local_response_norm": FromTorch("lrn", _lrn_in, ("size", "alpha", "beta", "k")),
    "Dropout": FromTorch("dropout", _dropout_in),
    "fn:dropout": FromTorch("dropout", _dropout_in, ("p", "training", "inplace")),
    "Flatten": FromTorch("flatten", _flatten_in),
    "fn:flatten": FromTorch("flatten", _flatten_in, ("start_dim", "end_dim")),
    "method:flatten": FromTorch("flatten", _flatten_in, ("start_dim", "end_dim")),
    "Softmax": FromTorch("softmax", _softmax_in),
    "fn:softmax": FromTorch("softmax", _softmax_in, ("dim",)),
    "Identity": FromTorch("identity", lambda s: None),        # the input itself: no layer
    # torchvision.ops.StochasticDepth and its function; archc's own helper takes mode as row=True
    "StochasticDepth": FromTorch("stochastic_depth", _stochastic_depth_in),
    "fn:stochastic_depth": FromTorch("stochastic_depth", _stochastic_depth_in, ("p", "mode", "training")),
    "fn:cat": FromTorch("concat", _cat_in, ("dim",)),
    "method:mean": FromTorch("adaptive_avg_pool2d", _mean_in, ("dim", "keepdim")),
    "fn:mean": FromTorch("adaptive_avg_pool2d", _mean_in, ("dim", "keepdim")),
    "fn:add": FromTorch("add", _join_in("add", True)),
    "fn:iadd": FromTorch("add", _join_in("add", True)),
    "method:add": FromTorch("add", _join_in("add", True)),
    "method:add_": FromTorch("add", _join_in("add", True)),     # archc's own residual sums (x.add_(y))
    "fn:mul": FromTorch("mul", _join_in("mul", False)),
    "fn:imul": FromTorch("mul", _join_in("mul", False)),
    # tokens (ViT): attention as torchvision's EncoderBlock calls it, attn(x, x, x, need_weights=False)[0]; the
    # patch embedding (a conv then flatten(2).transpose(1, 2), or reshape then permute(0, 2, 1)), the class
    # token (a (1, 1, D) parameter expanded and concatenated before the tokens), the position embedding (a
    # (1, S, D) parameter added) and x[:, i] are patterns of the importer (importers/pytorch.py, _token_step)
    "MultiheadAttention": FromTorch("self_attention", _attention_in),
    "param:cat": FromTorch("class_token", lambda s: {"op": "class_token"}),
    "param:add": FromTorch("pos_embedding", lambda s: {"op": "pos_embedding"}),
    "fn:getitem": FromTorch("select_token", _select_in, ("index",)),
    # Swin and MaxViT: their modules, leaves of the trace (by class name; torchvision's, or archc's own in a
    # module it generated), on a channels-last map (Swin) or one cut into windows or a grid (MaxViT)
    "ShiftedWindowAttention": FromTorch("window_attention", _swin_attention_in),
    "ShiftedWindowAttentionV2": FromTorch("window_attention", _swin_attention_in),
    "WindowAttention": FromTorch("window_attention", _own_attention_in),
    "RelativePositionalMultiHeadAttention": FromTorch("window_attention", _partition_attention_in),
    "PatchMerging": FromTorch("patch_merging", _patch_merging_in),
    "PatchMergingV2": FromTorch("patch_merging", _patch_merging_in),
}


# Calls that are one step of a pattern the table maps as a whole (ShuffleNet's channel shuffle, written
# x.view(N, g, C // g, H, W).transpose(1, 2).contiguous().view(N, C, H, W) by torchvision and
# x.unflatten(1, (g, -1)).transpose(1, 2).flatten(1, 2) by archc; its split, x.chunk(2, 1)[i]; MaxViT's
# partition of the map into windows, x.reshape(N, C, H / P, P, W / P, P).permute(0, 2, 4, 3, 5, 1).reshape(N,
# G, P * P, C), its grid (then swapaxes(-2, -3)) and the way back), and the arithmetic on sizes such patterns
# read: the step each call is, by the shapes it makes.
VIEW_STEPS: dict[str, str] = {
    "method:view": "reshape", "method:reshape": "reshape", "fn:reshape": "reshape", "method:unflatten": "reshape",
    "method:flatten": "reshape", "fn:flatten": "reshape",
    "method:transpose": "swap", "fn:transpose": "swap", "method:swapaxes": "swap", "fn:swapaxes": "swap",
    "method:contiguous": "same",
    "method:chunk": "split", "fn:chunk": "split", "fn:getitem": "pick",
    "method:permute": "permute", "fn:permute": "permute",
    "method:size": "size", "fn:getattr": "size", "fn:floordiv": "size", "fn:mul": "size", "fn:sub": "size",
}


def shape_comment(shape: tuple[int, ...]) -> str:
    return "# N x " + " x ".join(str(d) for d in shape)


# ----------------------------------------------------------------------------- the class


@dataclass
class Generated:
    source: str
    class_name: str
    module_paths: dict[str, str]       # IR node -> module path (parametrised nodes)


def class_name(spec: Spec) -> str:
    """The generated class's name: ``torch.class_name`` (validated as an identifier), or the spec's
    name in CamelCase; never a name the generated module already uses."""
    if spec.torch.class_name:
        return spec.torch.class_name
    name = "".join(p[:1].upper() + p[1:] for p in identifier(spec.name).split("_") if p) or "Net"
    return name + "Net" if name in RESERVED_VARIABLES or name[0].isdigit() else name


def _docstring_text(text: str) -> str:
    """Text that is safe inside the generated module's docstring (a file name may hold anything)."""
    return re.sub(r"[^A-Za-z0-9 _.,:/+=@()\[\]-]", "?", text)[:200]


def generate(g: nx.DiGraph, spec: Spec, heads: bool = True, source_name: str = "", profile: bool = False) -> Generated:
    """PyTorch source for the annotated graph ``g`` (with ``heads=False`` the training-only
    heads are left out entirely; with ``profile=True`` forward() calls ``self.archc_mark(row)``
    after each statement, for ``archc profile``): the submodules registered, forward's statements
    emitted, the file rendered, and the result checked before anything runs it."""
    name = class_name(spec)
    tuple_name = f"{name}Outputs"
    outputs = {k: v for k, v in g.graph["outputs"].items() if heads or not v["training_only"]}
    run = plan(g, heads)          # order, results and in-place ops: shared with the memory pass
    paths, init_lines = register(g, spec, run.order)
    body = emit(g, spec, run, outputs, paths, tuple_name, profile)
    src = render(g, spec, name, tuple_name, outputs, init_lines, body, source_name)
    check_source(src, {name, tuple_name})
    return Generated(src, name, paths)


def register(g: nx.DiGraph, spec: Spec, order: list[str]) -> tuple[dict[str, str], list[str]]:
    """The submodules of the nodes in ``order`` that have parameters, registered in declaration
    order (this fixes the state_dict order): each node's module path, and ``__init__``'s lines."""
    paths: dict[str, str] = {}
    init_lines: list[str] = []
    containers: set[str] = set()
    taken: dict[str, str] = {}
    scheduled = set(order)
    all_paths = module_paths(spec, sorted(g.nodes, key=lambda n: g.nodes[n]["order"]))
    for n in sorted((n for n in g.nodes if n in scheduled), key=lambda n: g.nodes[n]["order"]):
        data = g.nodes[n]
        op = TORCH_OPS[data["op"]]
        if op.module is None:
            continue
        path = all_paths[n]
        if path in taken or any(p == path or p.startswith(path + ".") for p in containers):
            raise BackendError([error(f"two layers map to the module path {path!r} "
                                      f"({taken.get(path, 'a container')} and {n})", n, data["loc"],
                                      hint="check the spec's torch.rename rules")])
        parts = path.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in taken:
                raise BackendError([error(f"module path {path!r} would nest inside layer {taken[prefix]!r}",
                                          n, data["loc"], hint="check the spec's torch.rename rules")])
            if prefix not in containers:
                containers.add(prefix)
                init_lines.append(_assign(prefix, "nn.Module()"))
        ins = [g.nodes[i]["shape"] for i in data["inputs"]]
        init_lines.append(_assign(path, op.module(data["attrs"], ins, data["shape"])))
        paths[n] = path
        taken[path] = n
    return paths, init_lines


def emit(g: nx.DiGraph, spec: Spec, run: Plan, outputs: dict[str, dict], paths: dict[str, str], tuple_name: str,
         profile: bool = False) -> list[str]:
    """forward's statements after the input check: the graph in schedule order (``run``, from
    :func:`~archcompiler.ir.plan.plan`), the training-only heads inside ``if self.training:``,
    tensors deleted after their last use, and the return."""
    order, result_of = run.order, run.result_of
    result_nodes = set(result_of.values())
    last_use = {n: max(c, default=len(order)) if n not in result_nodes else len(order) + 1
                for n, c in run.consumers.items()}
    last_use["input"] = max(run.consumers["input"], default=0)
    var: dict[str, str] = {"input": "x"}
    holder: dict[str, str] = {"x": "input"}
    bound: dict[str, set[str]] = {"x": {"input"}}        # variable -> the nodes whose value it holds
    pending: list[str] = []                              # variables to delete before the next statement

    def dead(v: str, i: int) -> bool:
        """Whether variable ``v`` holds nothing that is read after position ``i`` (and was bound by
        code that runs in eval mode too, so deleting it is always valid)."""
        nodes = bound.get(v, set())
        return bool(nodes) and all(last_use.get(m, 0) <= i and not g.nodes[m]["training_only"] for m in nodes)

    def flush(i: int) -> None:
        """Free tensors right after their last use: a block's branch outputs would otherwise stay
        alive in their variables until the next block reuses the names."""
        names = sorted({v for v in pending if dead(v, i)})
        pending.clear()
        if names:
            body.append(f"        del {', '.join(names)}")
            for v in names:
                bound.pop(v, None)
                holder.pop(v, None)

    heads = {k: f"{variable(k)}_logits" for k, v in outputs.items() if v["training_only"]}
    head_of = {result_of[k]: holder_var for k, holder_var in heads.items()}
    body: list[str] = []
    c, h, w = spec.input
    body.append(f"        # N x {c} x {h} x {w}")
    for holder_var in heads.values():          # typed for TorchScript: set in training mode only
        body.append(f"        {holder_var}: Optional[Tensor] = None")
    open_training, block_start = False, 0

    def close_block() -> None:
        if open_training and len(body) == block_start:
            body.append("            pass")

    for i, n in enumerate(order):
        data = g.nodes[n]
        training = data["training_only"]
        if training != open_training:
            close_block()
            if training:
                body.append("        if self.training:")
                block_start = len(body)
            open_training = training
        indent = " " * (12 if training else 8)
        if not training:
            flush(i - 1)
        xs = [var[p] for p in data["inputs"]]
        ins = [g.nodes[p]["shape"] for p in data["inputs"]]
        if OPS[data["op"]].passthrough(data["attrs"], ins):
            var[n] = xs[0]          # nothing to compute: the value passes through
            bound[xs[0]].add(n)
        else:
            out = _choose_var(n, g, spec, i, var, holder, last_use, result_of)
            expr = TORCH_OPS[data["op"]].call_on(data["attrs"], xs,
                                                 attr_expr("self", paths[n]) if n in paths else "",
                                                 n in run.inplace, ins)
            body.append(f"{indent}{out} = {expr}  {shape_comment(data['shape'])}")
            if profile and not training:
                body.append(f"{indent}self.archc_mark({n!r})")
            var[n] = out
            holder[out] = n
            bound[out] = {n}
        pending.extend(v for v in xs if v != var[n])
        if n in head_of:
            body.append(f"{indent}{head_of[n]} = {var[n]}")
    close_block()
    main_names = [k for k, v in outputs.items() if not v["training_only"]]
    ret_main = var[result_of[main_names[0]]]
    fields = ", ".join(f"{k}={heads.get(k) or var[result_of[k]]}" for k in outputs)
    if heads:
        body += ["        if torch.jit.is_scripting():   # TorchScript needs one return type, as torchvision's",
                 f"            return {tuple_name}({fields})",
                 "        else:",
                 "            if self.training:",
                 f"                return {tuple_name}({fields})",
                 f"            return {ret_main}"]
    elif len(outputs) > 1:
        body.append(f"        return {tuple_name}({fields})")
    else:
        body.append(f"        return {ret_main}")
    return body


def render(g: nx.DiGraph, spec: Spec, name: str, tuple_name: str, outputs: dict[str, dict], init_lines: list[str],
           body: list[str], source_name: str = "") -> str:
    """The module's text: the named tuple of outputs, the helpers (their text from runtime.py), and
    the class with ``__init__``'s lines, forward's ``body``, the losses, initialisation and
    ``predict_proba``."""
    # a final softmax: predict_proba applies it to the logits forward() returns
    final_softmax = {k: OPS[g.nodes[v["node"]]["op"]].probabilities for k, v in outputs.items()}
    main_names = [k for k, v in outputs.items() if not v["training_only"]]
    field_types = "\n".join(f"    {k}: {'Optional[Tensor]' if v['training_only'] else 'Tensor'}"
                            for k, v in outputs.items())
    losses = {k: (v["loss"], v["weight"], g.nodes[v["node"]]["op"]) for k, v in outputs.items()}
    init_rules = {kind: rule.model_dump() for kind, rule in spec.init.items()}
    # a convolution whose activation fuse_activation fused into it calls conv_act
    fused = any(d["attrs"].get("act") for _, d in g.nodes(data=True))
    helpers = list(dict.fromkeys(TORCH_OPS[d["op"]].helper for _, d in g.nodes(data=True)
                                 if TORCH_OPS[d["op"]].helper is not None))
    return _TEMPLATE.format(
        source=_docstring_text(source_name or spec.file), spec=_docstring_text(spec.name), name=name, tuple_name=tuple_name,
        fields=list(outputs), field_types=field_types, init="\n".join(init_lines) or "        pass",
        body="\n".join(body), losses=losses, init_rules=init_rules, main=main_names[0],
        num_outputs=len(outputs), input_shape=list(spec.input),
        proba=_final_call(g, outputs[main_names[0]]["node"]) if final_softmax[main_names[0]]
        else _proba_of_loss(outputs[main_names[0]]["loss"]),
        # the helpers' text from runtime.py (one blank line after the named tuple, then two between definitions)
        loss_helpers=helper_source(_log1m_softmax, spec_loss)[1:], check_input=helper_source(check_input),
        spec_repr=repr(spec.name),
        conv_act=(helper_source(conv_act) if fused else "") + helper_source(*helpers),
        layout="\n        x = x.contiguous(memory_format=torch.channels_last)  # the layout the weights have"
        if g.graph.get("memory_format") == "channels_last" else "",
        inference_only=_INFERENCE_ONLY if g.graph.get("optimizations") is not None else "",
    )


def _proba_of_loss(loss: str) -> str:
    """Without a final softmax, the probabilities the main output's loss trains the logits to give: a
    softmax over the classes for cross-entropy, each unit's sigmoid for binary cross-entropy."""
    return "torch.softmax(logits, dim=1)" if loss == "cross_entropy" else "torch.sigmoid(logits)"


def _final_call(g: nx.DiGraph, node: str) -> str:
    """The call of a final op that forward() leaves out (a softmax: the logits are returned), applied
    to ``logits`` in predict_proba."""
    d = g.nodes[node]
    return TORCH_OPS[d["op"]].call(d["attrs"], ["logits"], "", False)


def _assign(path: str, value: str) -> str:
    parent, _, leaf = path.rpartition(".")
    base = attr_expr("self", parent) if parent else "self"
    if leaf.isidentifier():
        return f"        {base}.{leaf} = {value}"
    return f'        {base}.add_module("{leaf}", {value})'


def _choose_var(n: str, g: nx.DiGraph, spec: Spec, i: int, var: dict, holder: dict,
                last_use: dict, result_of: dict) -> str:
    """``x`` for the main stream, the layer's own name inside blocks and heads; another name only
    when the preferred one still holds a tensor that is needed later."""
    data = g.nodes[n]
    layer = data["layer"]
    outputs_of = {v: k for k, v in result_of.items()}
    instance = spec.instances.get(data["group"]) if data["group"] else None
    if data["training_only"] and n in outputs_of:
        preferred = variable(outputs_of[n])
    elif data["training_only"]:
        preferred = variable(data["row"])
    elif data["group"] is None or (instance is not None and instance.output == layer and instance.parent is None):
        preferred = "x"
    else:
        preferred = variable(layer.rsplit("/", 1)[-1])
    heads = {f"{variable(k)}_logits" for k, v in g.graph["outputs"].items() if v["training_only"]}
    for candidate in (preferred, variable(layer), variable(n)):
        current = holder.get(candidate)
        if candidate in heads:
            continue
        if current is None or current in data["inputs"] and last_use.get(current, 0) <= i \
                or last_use.get(current, 0) < i:
            return candidate
    k = 2
    while holder.get(f"{variable(n)}_{k}") is not None:
        k += 1
    return f"{variable(n)}_{k}"


_INFERENCE_ONLY = '''

    def train(self, mode: bool = True):
        """This module is optimised for inference (BatchNorm folded, dropout and auxiliary heads
        removed): it cannot train. Build it without --optimize to train."""
        if mode:
            raise RuntimeError("this module is optimised for inference and cannot train; "
                               "build it without optimize=True (--optimize) to train")
        return super().train(False)
'''

_TEMPLATE = '''"""{spec}: PyTorch module generated by archc from {source}.

Do not edit: change the spec and run `archc build` again.
"""

from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn



class {tuple_name}(NamedTuple):
    """The model's outputs in training mode, the main one first."""

{field_types}
{loss_helpers}{check_input}{conv_act}

class {name}(nn.Module):
    """Outputs: {fields!r}; the training-only ones exist in training mode only."""

    LOSSES = {losses!r}   # output -> (loss, weight, final op)
    INIT = {init_rules!r}
    INPUT_SHAPE = {input_shape!r}

    def __init__(self) -> None:
        super().__init__()
{init}
        self.init_weights()

    def forward(self, x: Tensor):
        if not torch.jit.is_scripting():
            if not torch.jit.is_tracing():
                check_input(x, self.INPUT_SHAPE, {spec_repr}){layout}
{body}
{inference_only}
    def loss(self, outputs, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """The spec's losses: each output's loss times its weight, summed."""
        if isinstance(outputs, Tensor):
            outputs = {{{main!r}: outputs}}
        else:
            outputs = outputs._asdict()
        total = None
        for name, logits in outputs.items():
            kind, weight, final = self.LOSSES[name]
            term = weight * spec_loss(kind, final, logits, target, label_smoothing)
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities: the spec's final softmax applied to the main output, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            logits = self(x)
        finally:
            self.train(was_training)
        return {proba}

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise weights as the spec's `init` section says (PyTorch's defaults otherwise)."""
        kinds = {{nn.Conv2d: "conv", nn.Linear: "linear", nn.BatchNorm2d: "batch_norm"}}
        for module in self.modules():
            rule = self.INIT.get(kinds.get(type(module), ""))
            if rule is None or rule["kind"] == "default":
                continue
            w = module.weight
            if rule["kind"] == "trunc_normal":
                nn.init.trunc_normal_(w, mean=rule["mean"], std=rule["std"], a=rule["a"], b=rule["b"])
            elif rule["kind"] == "normal":
                nn.init.normal_(w, mean=rule["mean"], std=rule["std"])
            elif rule["kind"] == "xavier_uniform":
                nn.init.xavier_uniform_(w)
            elif rule["kind"] == "xavier_normal":
                nn.init.xavier_normal_(w)
            elif rule["kind"] == "kaiming_normal":
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
            elif rule["kind"] == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
            elif rule["kind"] == "constant":
                nn.init.constant_(w, rule["value"])
            if module.bias is not None and rule["bias"] is not None:
                nn.init.constant_(module.bias, rule["bias"])
'''
