"""sub and div (issue #32): element-wise difference and quotient of two layers' outputs that broadcast as mul's do,
each one module (archcompiler/ops/sub.py, div.py) and nothing else in the package: against torch their shape,
parameters, FLOPs, memory (measured) and logits, the first input minus (divided by) the second; the located error
for shapes that do not broadcast; the diagram and the latency class; and archc import from a torch module
(PoolFormer's and EfficientFormer's token mixer, pool(x) - x) and from ONNX (Sub, Div)."""

from __future__ import annotations

import pytest
from conftest import assert_memory_measured

import archcompiler
from archcompiler import GraphError
from archcompiler.errors import SpecError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# PoolFormer's token mixer (pool(x) - x, in a residual block), and a map divided by a per-channel gate of its own
# (squeeze-and-excitation's shape: C x H x W over C x 1 x 1), the other way round too
SPEC = ("name: ew\ninput: [3, 12, 12]\nlayers:\n"
        "  - {name: c1, op: conv, out: 8, kernel: 3, padding: 1}\n"
        "  - {name: pool, op: avg_pool, kernel: 3, stride: 1, padding: 1, count_include_pad: false}\n"
        "  - {name: mix, op: sub, inputs: [pool, c1]}\n"
        "  - {name: res, op: add, inputs: [c1, mix]}\n"
        "  - {name: g, op: global_avg_pool}\n"
        "  - {name: gate, op: conv, out: 8, kernel: 1, act: sigmoid}\n"
        "  - {name: q, op: div, inputs: [res, gate]}\n"
        "  - {name: q2, op: div, inputs: [gate, q]}\n"
        "  - {name: d, op: sub, inputs: [gate, q2]}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def _reference(m, x):
    """The network written by hand with torch's operators and the built module's weights."""
    c1 = m.c1(x)
    res = c1 + (F.avg_pool2d(c1, 3, 1, 1, count_include_pad=False) - c1)
    gate = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(res, 1), m.gate.weight, m.gate.bias))
    q = res / gate
    d = gate - gate / q
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(d, 1), 1), m.fc.weight, m.fc.bias)


def test_shape_params_and_flops_agree_with_torch():
    """No parameters, no MACs (FlopCounterMode counts the convolutions and the linear layer alone); one element
    operation per output element; the broadcast output is the larger shape."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert all(rows[k]["output"] == [8, 12, 12] and rows[k]["params"] == rows[k]["macs"] == 0
               for k in ("mix", "q", "q2", "d"))
    assert report["by_op"]["sub"]["elementwise"] == report["by_op"]["div"]["elementwise"] == 2 * 2 * 8 * 12 * 12
    model = archcompiler.build(SPEC, seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        for net in (model, lambda x: _reference(model, x)):
            with FlopCounterMode(display=False) as counter:
                y = net(x)
            assert tuple(y.shape) == (2, 2)
            assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]


def test_logits_equal_a_hand_written_reference():
    import inspect

    model = archcompiler.build(SPEC, seed=0).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), _reference(model, x))
    source = inspect.getsource(type(model).forward)
    assert "mix = pool - x" in source and "x = x / gate" in source and "x = gate / x" in source \
        and "x = gate - x" in source


@pytest.mark.parametrize("op", ["sub", "div"])
def test_shapes_that_do_not_broadcast_are_refused_at_the_layer_naming_both(op):
    text = SPEC.replace("{name: gate, op: conv, out: 8, kernel: 1, act: sigmoid}",
                        "{name: gate, op: conv, out: 4, kernel: 1, act: sigmoid}") \
        .replace("{name: q, op: div, inputs: [res, gate]}", f"{{name: q, op: {op}, inputs: [res, gate]}}")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    problem = info.value.errors[0]
    assert f"{op} needs inputs that broadcast" in problem.message and "12x12x8 and 1x1x4" in problem.message
    assert problem.line == 10          # the layer q
    for inputs, said in (("[res]", "at least 2 items"), ("[res, gate, c1]", "at most 2 items")):
        with pytest.raises(SpecError) as info:
            archcompiler.analyze(SPEC.replace("{name: q, op: div, inputs: [res, gate]}",
                                              f"{{name: q, op: {op}, inputs: {inputs}}}"))
        assert said in info.value.errors[0].message and info.value.errors[0].line == 10


# memory: a difference and a quotient of two maps (PoolFormer's mixer without the residual add after it), and a
# map against a per-channel gate, either order
MAPS = ("name: m\ninput: [3, 12, 12]\nlayers:\n"
        "  - {name: c1, op: conv, out: 16, kernel: 3, padding: 1}\n"
        "  - {name: pool, op: avg_pool, kernel: 3, stride: 1, padding: 1, count_include_pad: false}\n"
        "  - {name: mix, op: OP, inputs: [pool, c1]}\n"
        "  - {name: c2, op: conv, out: 8, kernel: 1}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")
GATE = ("name: t\ninput: [8, 10, 10]\nlayers:\n"
        "  - {name: c, op: conv, out: 16, kernel: 3, padding: 1, norm: batch_norm, act: relu}\n"
        "  - {name: pool, op: global_avg_pool}\n"
        "  - {name: fc1, op: conv, out: 4, kernel: 1, act: relu}\n"
        "  - {name: fc2, op: conv, out: 16, kernel: 1, act: sigmoid}\n"
        "  - {name: gated, op: OP, inputs: [fc2, c]}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


@pytest.mark.parametrize("op", ["sub", "div"])
@pytest.mark.parametrize("text", [MAPS, MAPS.replace("[pool, c1]", "[c1, pool]"), GATE,
                                  GATE.replace("[fc2, c]", "[c, fc2]")], ids=["maps", "maps-swapped", "gate",
                                                                              "gate-swapped"])
def test_memory_matches_a_measurement(text, op):
    """Inference peak exactly, a training step within 1%. sub: autograd keeps nothing, and its backward makes
    the negated gradient at the output's size (summed down for a broadcast input); div: autograd keeps both inputs
    (grad / b and -grad * a / b^2), and its backward holds four output-sized tensors at once (both gradients and
    two temporaries of the second)."""
    assert_memory_measured(text.replace("OP", op))


def test_what_autograd_keeps_and_the_backward_makes_measured_on_torch():
    """The facts of the two modules against torch itself: the tensors autograd saves, and the most the backward
    holds beyond the output's gradient, in output-sized tensors: sub 1 (the negated gradient; the first input's
    gradient is the output's own), div 4, which archc counts as both inputs' gradients and the rest as workspace."""
    import math

    from archcompiler.measure.memory import LiveTensors
    from archcompiler.ops import KINDS

    for shapes in (((4, 8, 6, 6), (4, 8, 6, 6)), ((4, 8, 6, 6), (4, 8, 1, 1)), ((4, 8, 1, 1), (4, 8, 6, 6))):
        for op, fn in (("sub", torch.sub), ("div", torch.div)):
            a, b = (torch.rand(s).add(0.5).requires_grad_() for s in shapes)
            saved = []
            with torch.autograd.graph.saved_tensors_hooks(lambda t, out=saved: out.append(tuple(t.shape)) or t,
                                                          lambda t: t):
                fn(a, b)
            y = fn(a, b)          # (a backward through the hooks above would hold more)
            ins, out = [s[1:] for s in shapes], tuple(y.shape[1:])
            kinds, extra = KINDS[op].saves({}, ins, out)
            assert sorted(saved) == (sorted(shapes) if kinds == ("input",) else []) and extra == 0, (op, saved)
            g = torch.randn_like(y)
            with LiveTensors() as live:
                live.hold(g)
                before = live.current
                torch.autograd.grad(y, (a, b), g)
            assert round((live.peak - before) / (y.numel() * 4)) == {"sub": 1, "div": 4}[op], (op, shapes)
            if op == "div":
                assert sum(math.prod(s) for s in ins) + KINDS[op].backward_workspace({}, ins, out) == 4 * math.prod(out)


def test_they_are_drawn_and_timed_like_an_add():
    from archcompiler.ops import KINDS

    for op in ("sub", "div"):
        kernel = KINDS[op].latency.kernel({}, [(16, 1, 1), (16, 10, 10)], (16, 10, 10))
        assert kernel.kind == "add" and kernel.work == 16 * 10 * 10
    pytest.importorskip("graphviz")
    from archcompiler.backends.dot import build_dot

    dot = build_dot(archcompiler.load_spec(SPEC)).source
    assert "mix\\nsub" in dot and "q\\ndiv" in dot


# ----------------------------------------------------------------------------- archc import from torch


class Pooling(nn.Module):
    """PoolFormer's (and EfficientFormer's) token mixer: the average of each neighbourhood minus the token."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class Net(nn.Module):
    """A PoolFormer block (GroupNorm with one group, the pooling mixer, a residual), then a map divided by a gate
    (x / gate, torch.div, x.div), and differences written as torch.sub and x.sub. (Without the norm for the
    TorchScript exporter: the output shape of its group norm pattern is unknown to ONNX's shape inference.)"""

    def __init__(self, norm=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(1, 8) if norm else nn.Identity()
        self.mixer = Pooling()
        self.gate = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.mixer(self.norm(x))
        g = torch.sigmoid(self.gate(F.adaptive_avg_pool2d(x, 1)))
        y = torch.div(x / g, g).div(g)
        y = torch.sub(y, g).sub(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_import_from_torch_gives_the_same_logits():
    original = Net().eval()
    text = archcompiler.import_module(original, input=(3, 10, 10))
    assert "{name: mixer.sub, op: sub, inputs: [mixer.pool, norm]}" in text
    assert text.count("op: div") == 3 and text.count("op: sub") == 3
    rebuilt = archcompiler.build(text).eval()
    rebuilt.load_state_dict(original.state_dict())
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


@pytest.mark.parametrize("call, said", [
    (lambda x: x / 3, "a division by 3.0"),          # (x / 2, x - 1, 1 - x: affine layers, tests/test_affine.py)
    (lambda x: 1 / x, "a number divided by a tensor"),
    (lambda x: torch.sub(x, x.relu(), alpha=2), "alpha=2"),
    (lambda x: torch.div(x, x.sigmoid(), rounding_mode="floor"), "rounding_mode='floor'"),
    (lambda x: x.div(x.sigmoid(), rounding_mode="trunc"), "rounding_mode='trunc'"),
])
def test_import_refuses_a_constant_operand_and_other_arithmetic_saying_why(call, said):
    from archcompiler.errors import BackendError

    class Arith(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return call(self.conv(x))

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Arith(), input=(3, 8, 8))
    assert said in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- archc import from ONNX


@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
def test_an_exported_torch_module_imports_with_the_same_logits(how, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    if how == "dynamo":
        pytest.importorskip("onnxscript")
    from archcompiler.cli import main

    original = Net(norm=how == "dynamo").eval()
    x = torch.randn(1, 3, 10, 10)
    torch.onnx.export(original, (x,), str(tmp_path / "m.onnx"), input_names=["image"], output_names=["logits"],
                      **({"dynamo": False, "opset_version": 13} if how == "torchscript" else {"dynamo": True}))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("Sub") == 3 and ops.count("Div") == 3
    assert main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml")]) == 0
    spec = archcompiler.load_spec(tmp_path / "m.yaml")
    assert [lay.op for lay in spec.layers].count("sub") == 3
    assert [lay.op for lay in spec.layers].count("div") == 3
    rebuilt = archcompiler.build(spec, weights=str(tmp_path / "m.safetensors")).eval()
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("node", ["Sub", "Div"])
def test_a_constant_operand_is_refused_by_node(node, tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from archcompiler.errors import BackendError
    from archcompiler.importers.onnx import import_onnx

    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 3, 3]) for n in ("image", "logits")]
    graph = helper.make_graph([helper.make_node(node, ["image", "k"], ["logits"])], "g", value[:1], value[1:],
                              [numpy_helper.from_array(np.full((4, 1, 1), 2, np.float32), "k")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "c.onnx"))
    with pytest.raises(BackendError) as info:
        import_onnx(tmp_path / "c.onnx", None)
    assert f"({node})" in str(info.value) and f"a {node.lower()} with a constant" in str(info.value)


# ----------------------------------------------------------------------------- add, broadcasting (issue #32)

@pytest.mark.parametrize("text", [GATE, GATE.replace("[fc2, c]", "[c, fc2]")], ids=["gate", "gate-swapped"])
def test_an_add_that_broadcasts_matches_torch_in_memory(text):
    """A map plus a per-channel C x 1 x 1 term (either order), measured: the broadcast input's gradient is its
    own, made at the output's size and summed down, as sub's."""
    assert_memory_measured(text.replace("OP", "add"))


@pytest.mark.parametrize("order", [["g", "c"], ["c", "g"]])
def test_an_add_that_broadcasts_gives_torchs_values_and_never_runs_in_place_over_the_smaller_input(order):
    text = ("name: b\ninput: [3, 10, 10]\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 3, padding: 1, act: relu}\n"
            "  - {name: p, op: global_avg_pool}\n  - {name: g, op: conv, out: 8, kernel: 1, act: sigmoid}\n"
            f"  - {{name: s, op: add, inputs: [{order[0]}, {order[1]}]}}\n"
            "  - {name: q, op: global_avg_pool}\n  - {name: f, op: flatten}\n  - {name: fc, op: linear, out: 2}\n")
    model = archcompiler.build(archcompiler.load_spec(text), seed=0).eval()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    c = F.relu(F.conv2d(x, model.c.weight, model.c.bias, padding=1))
    g = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(c, 1), model.g.weight, model.g.bias))
    want = F.linear(torch.flatten(F.adaptive_avg_pool2d(g + c, 1), 1), model.fc.weight, model.fc.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
    assert ".add_(" not in model.code or order == ["c", "g"]


def test_an_add_that_does_not_broadcast_is_refused_at_its_inputs_line():
    text = GATE.replace("OP", "add").replace("{name: fc2, op: conv, out: 16, kernel: 1, act: sigmoid}",
                                             "{name: fc2, op: conv, out: 4, kernel: 1, act: sigmoid}")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    assert "1x1x4" in str(info.value) or "10x10x16" in str(info.value)


def test_a_broadcasting_add_imports_from_torch_and_onnx():
    """x + gate (a C x 1 x 1 term from the map itself, squeeze-and-excitation's shape with a sum)."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=1)
            self.g = nn.Conv2d(8, 8, 1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = self.c(x)
            x = x + torch.sigmoid(self.g(F.adaptive_avg_pool2d(x, 1)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    text = archcompiler.import_module(Net(), input=(3, 12, 12))
    assert "op: add" in text
