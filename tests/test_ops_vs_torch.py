"""Every op of the vocabulary, in random small configurations, against torch itself:
inferred shape vs a real forward, params vs numel(), 2 x MACs vs FlopCounterMode."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archcompiler
from archcompiler.spec.layers import pair


def _conv(r: random.Random) -> tuple[dict, tuple]:
    groups = r.choice([1, 1, 2, 4])
    cin = groups * r.randint(1, 4)
    k = r.choice([1, 2, 3, 5, [3, 1], [1, 5]])
    pad = r.choice([0, 1, 2, "same", "valid", [1, 0]])
    stride = 1 if pad == "same" else r.choice([1, 2, 3, [2, 1]])
    kh, kw = pair(k)
    if isinstance(pad, list) or isinstance(pad, int):
        ph, pw = pair(pad) if pad != 0 else (0, 0)
        pad = [min(ph, kh // 2), min(pw, kw // 2)] if isinstance(pad, list) else min(pad, min(kh, kw) // 2)
    layer = {"op": "conv", "out": groups * r.randint(1, 5), "kernel": k, "stride": stride, "padding": pad,
             "dilation": r.choice([1, 1, 2]), "groups": groups, "act": r.choice(["none", "relu", "sigmoid"]),
             "norm": r.choice([None, "batch_norm"]), "bias": r.choice([None, True, False])}
    return layer, (cin, r.randint(9, 20), r.randint(9, 20))


def _pool(op: str):
    def make(r: random.Random) -> tuple[dict, tuple]:
        k = r.choice([2, 3, 5, [3, 2]])
        kh, kw = pair(k)
        layer = {"op": op, "kernel": k, "stride": r.choice([None, 1, 2, 3]),
                 "padding": r.randint(0, min(kh, kw) // 2), "ceil_mode": r.choice([True, False])}
        if op == "avg_pool":
            layer["count_include_pad"] = r.choice([True, False])
        return layer, (r.randint(1, 4), r.randint(7, 17), r.randint(7, 17))
    return make


GENERATORS = {
    "conv": _conv,
    "max_pool": _pool("max_pool"),
    "avg_pool": _pool("avg_pool"),
    "adaptive_avg_pool": lambda r: ({"op": "adaptive_avg_pool", "output": r.choice([1, 2, 3, [2, 4]])},
                                    (3, r.randint(4, 12), r.randint(4, 12))),
    "global_avg_pool": lambda r: ({"op": "global_avg_pool"}, (5, r.randint(1, 9), r.randint(1, 9))),
    "lrn": lambda r: ({"op": "lrn", "size": r.choice([1, 3, 5]), "alpha": 1e-3, "beta": 0.75, "k": 2.0},
                      (r.randint(1, 8), 6, 7)),
    "batch_norm": lambda r: ({"op": "batch_norm", "eps": 1e-3}, (r.randint(1, 8), 5, 4)),
    "relu": lambda r: ({"op": r.choice(["relu", "sigmoid", "tanh", "gelu", "silu", "relu6", "leaky_relu",
                                       "hardswish", "hardsigmoid"])},
                       (3, 4, 5)),
    "dropout": lambda r: ({"op": "dropout", "p": r.choice([0.0, 0.3, 0.5])}, (3, 4, 5)),
    "stochastic_depth": lambda r: ({"op": "stochastic_depth", "p": r.choice([0.0, 0.2, 0.5]),
                                    "mode": r.choice(["row", "batch"])}, (3, 4, 5)),
    "flatten": lambda r: ({"op": "flatten"}, (r.randint(1, 4), r.randint(1, 4), r.randint(1, 4))),
    "linear": lambda r: ({"op": "linear", "out": r.randint(1, 30), "bias": r.choice([True, False]),
                          "act": r.choice(["none", "relu"])}, (r.randint(1, 5), r.randint(1, 4), r.randint(1, 4))),
    "channel_linear": lambda r: ({"op": "linear", "over": "channels", "out": r.randint(1, 30),
                                  "bias": r.choice([True, False]), "act": r.choice(["none", "gelu"])},
                                 (r.randint(1, 9), r.randint(1, 6), r.randint(1, 6))),
    "layer_norm": lambda r: ({"op": "layer_norm", "eps": r.choice([1e-5, 1e-6])},
                             (r.randint(1, 9), r.randint(1, 6), r.randint(1, 6))),
    "layer_scale": lambda r: ({"op": "layer_scale", "init": r.choice([1e-6, 0.5])},
                              (r.randint(1, 9), r.randint(1, 6), r.randint(1, 6))),
    "softmax": lambda r: ({"op": "softmax"}, (r.randint(2, 9), 1, 1)),
    "identity": lambda r: ({"op": "identity"}, (2, 3, 3)),
    # Swin's: the window tiles the map or pad: true pads it; shifted or not; an odd side merged with padding
    "window_attention": lambda r: ({"op": "window_attention", "heads": r.choice([1, 2]), "window": r.choice([2, 3]),
                                    "shift": r.choice([0, 1]), "pad": True},
                                   (2 * r.randint(1, 3), r.randint(2, 7), r.randint(2, 7))),
    "patch_merging": lambda r: ({"op": "patch_merging", "out": r.choice([None, 5]), "norm": r.choice(["before", "after"])},
                                (r.randint(1, 6), r.randint(1, 7), r.randint(1, 7))),
}


def _spec(layer: dict, shape: tuple, extra: str = "") -> str:
    fields = ", ".join(f"{k}: {_yaml(v)}" for k, v in layer.items() if v is not None)
    return (f"name: t\ninput: [{', '.join(map(str, shape))}]\nlayers:\n  - {{name: x, {fields}}}\n{extra}"
            "  - {name: out, op: identity}\n")


def _yaml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def _compare(text: str, shape: tuple) -> None:
    report = archcompiler.analyze(text)
    model = archcompiler.build(text, seed=0).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]), text
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
    assert counter.get_total_flops() == 2 * 2 * report["total"]["macs"], text   # batch of 2


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_op_agrees_with_torch(kind):
    r = random.Random(kind)
    for _ in range(12):
        layer, shape = GENERATORS[kind](r)
        _compare(_spec(layer, shape), shape)


@pytest.mark.parametrize("op", ["concat", "add"])
def test_combining_ops_agree_with_torch(op):
    r = random.Random(op)
    for _ in range(6):
        c = r.randint(1, 6)
        n = r.randint(2, 4)
        lines = "".join(f"  - {{name: b{i}, op: conv, out: {c if op == 'add' else r.randint(1, 6)}, kernel: 3, "
                        f"padding: 1, input: input}}\n" for i in range(n))
        act = ", act: relu" if op == "add" else ""
        text = (f"name: t\ninput: [3, 8, 8]\nlayers:\n{lines}"
                f"  - {{name: x, op: {op}, inputs: [{', '.join(f'b{i}' for i in range(n))}]{act}}}\n")
        _compare(text, (3, 8, 8))


def test_mul_broadcasts_as_torch():
    """A map times a gate of 1x1xC, 1xWxC or a map of its own shape, either way round."""
    r = random.Random("mul")
    for _ in range(6):
        c, h, w = r.randint(1, 6), r.randint(2, 7), r.randint(2, 7)
        gate = r.choice(["1, 1", f"1, {w}", f"{h}, {w}"])
        first, second = r.choice([("m", "g"), ("g", "m")])
        text = (f"name: t\ninput: [3, {h}, {w}]\nlayers:\n"
                f"  - {{name: m, op: conv, out: {c}, kernel: 3, padding: 1, input: input}}\n"
                f"  - {{name: g, op: adaptive_avg_pool, output: [{gate}]}}\n"
                f"  - {{name: x, op: mul, inputs: [{first}, {second}]}}\n")
        _compare(text, (3, h, w))


def test_channel_split_and_shuffle_agree_with_torchvision():
    """channel_split is x.chunk(2, dim=1)[half]; channel_shuffle is torchvision's channel_shuffle
    (view as groups x C / groups, transpose, copy): values, shapes, no params and no FLOPs."""
    r = random.Random("shuffle")
    for _ in range(6):
        c, groups = 2 * r.randint(1, 6), r.choice([1, 2])
        h, w = r.randint(2, 7), r.randint(2, 7)
        half = r.choice(["first", "second"])
        text = (f"name: t\ninput: [3, {h}, {w}]\nlayers:\n"
                f"  - {{name: m, op: conv, out: {c}, kernel: 3, padding: 1}}\n"
                f"  - {{name: x, op: channel_split, half: {half}}}\n"
                f"  - {{name: y, op: channel_shuffle, groups: {groups}, input: m}}\n"
                f"  - {{name: out, op: concat, inputs: [x, y]}}\n")
        _compare(text, (3, h, w))
        model = archcompiler.build(text, seed=0).eval()
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            m = model.m(x)
            n = m.size(1)
            shuffled = m.view(2, groups, n // groups, h, w).transpose(1, 2).contiguous().view(2, n, h, w)
            expected = torch.cat([m.chunk(2, dim=1)[0 if half == "first" else 1], shuffled], 1)
            assert torch.equal(model(x), expected)


# ----------------------------------------------------------------------------- over sequences of tokens
# An image made tokens by patch_embed, then the op: counted with autograd on and the math attention
# backend, where FlopCounterMode sees attention's QK^T and AV products (README, "FLOPs of attention")

TOKEN_GENERATORS = {
    "patch_embed": lambda r: ({"op": "identity"}, r.choice([2, 3, 4])),
    "class_token": lambda r: ({"op": "class_token"}, r.choice([2, 4])),
    "pos_embedding": lambda r: ({"op": "pos_embedding"}, r.choice([2, 4])),
    "layer_norm": lambda r: ({"op": "layer_norm", "eps": r.choice([1e-5, 1e-6])}, r.choice([2, 4])),
    "linear": lambda r: ({"op": "linear", "over": "tokens", "out": r.randint(1, 30), "bias": r.choice([True, False]),
                          "act": r.choice(["none", "gelu"])}, r.choice([2, 4])),
    "dropout": lambda r: ({"op": "dropout", "p": r.choice([0.0, 0.5])}, 2),
    "self_attention": lambda r: ({"op": "self_attention", "heads": r.choice([1, 2, 4])}, r.choice([1, 2, 4])),
    "select_token": lambda r: ({"op": "select_token", "index": r.randint(0, 3)}, 2),
}


@pytest.mark.parametrize("kind", sorted(TOKEN_GENERATORS))
def test_token_op_agrees_with_torch(kind):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    r = random.Random(kind)
    for _ in range(4):
        layer, patch = TOKEN_GENERATORS[kind](r)
        dim, size = 4 * r.randint(1, 4), patch * r.randint(2, 4)
        fields = ", ".join(f"{k}: {_yaml(v)}" for k, v in layer.items())
        text = (f"name: t\ninput: [3, {size}, {size}]\nlayers:\n"
                f"  - {{name: p, op: patch_embed, out: {dim}, patch: {patch}}}\n  - {{name: x, {fields}}}\n")
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        x = torch.randn(2, 3, size, size)
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            y = model(x)
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]), text
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == 2 * 2 * report["total"]["macs"], text   # batch of 2


def test_swin_v2_window_attention_counts_its_position_bias_mlp_once_per_forward():
    """Scaled cosine attention with the continuous position bias: the MLP over the (2W - 1)^2 offsets
    runs once per forward, whatever the batch; archc counts it per image, so one image agrees exactly."""
    r = random.Random("cosine")
    for _ in range(4):
        c, win = 2 * r.randint(1, 3), r.choice([2, 3])
        h, w = r.randint(2, 7), r.randint(2, 7)
        text = _spec({"op": "window_attention", "heads": 2, "window": win, "shift": r.choice([0, 1]), "pad": True,
                      "cosine": True}, (c, h, w))
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            y = model(torch.randn(1, c, h, w))
        assert tuple(y.shape[1:]) == (c, h, w)
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == 2 * report["total"]["macs"], text
