"""matmul (issue #32): the matrix product of two layers' outputs, one module (archcompiler/ops/matmul.py): against
torch its shapes (torch.matmul's broadcasting over the leading dims), parameters, FLOPs, values and memory (what
autograd keeps and what the backward makes, measured); the located errors of shapes that do not multiply; a
hand-written spec through archc validate, flops and build in a fresh process; archc import of torch.matmul, @,
x.matmul and torch.bmm (a product with a layer's own weight stays a linear); and the ONNX round trip, both torch
exporters (a MatMul of two layers' outputs; one by a constant matrix stays a linear)."""

from __future__ import annotations

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc, trained_like
from test_reduce import onnx_round_trip

import archcompiler
from archcompiler import GraphError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# attention written out on a sequence: scores q @ k^T, softmax over the keys, times v; then a stack of maps times a
# map broadcast over it (2 x 4 x 6 times 1 x 6 x 4: the leading dim broadcast)
SPEC = ("name: mm\ninput: [3, 4, 6]\nlayers:\n"
        "  - {name: pe, op: patch_embed, out: 8, patch: 2}\n"
        "  - {name: q, op: linear, out: 6, over: tokens}\n"
        "  - {name: k, op: linear, out: 6, over: tokens, input: pe}\n"
        "  - {name: kt, op: transpose}\n"
        "  - {name: scores, op: matmul, inputs: [q, kt]}\n"
        "  - {name: att, op: softmax, dim: -1}\n"
        "  - {name: v, op: linear, out: 8, over: tokens, input: pe}\n"
        "  - {name: mix, op: matmul, inputs: [att, v]}\n"
        "  - {name: vt, op: transpose, input: v}\n"
        "  - {name: gram, op: matmul, inputs: [vt, mix]}\n"
        "  - {name: m, op: token_mean}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def _reference(m, x):
    x = m.pe(x).flatten(2).transpose(1, 2)
    q, k, v = m.q(x), m.k(x), m.v(x)
    mix = F.softmax(q @ k.transpose(1, 2), -1) @ v
    return m.fc(torch.bmm(v.transpose(1, 2), mix).mean(1))


def test_shapes_params_flops_and_values_agree_with_torch():
    """M x K times K x N is M x N; no parameters; M N K MACs each, as FlopCounterMode counts them (2 M N K FLOPs);
    the logits equal the hand-written network's."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert [rows[k]["output"] for k in ("scores", "mix", "gram")] == [[6, 6], [6, 8], [8, 8]]
    assert [rows[k]["macs"] for k in ("scores", "mix", "gram")] == [2 * 6 * 6 * 6, 2 * 6 * 8 * 6, 2 * 8 * 8 * 6]
    assert rows["scores"]["params"] == 0
    model = archcompiler.build(SPEC, seed=0).eval()
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net in (model, lambda x: _reference(model, x)):
            with FlopCounterMode(display=False) as counter:
                y = net(x)
            assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
        assert torch.allclose(y, model(x), rtol=1e-6, atol=1e-6)


def test_leading_dims_broadcast_as_torch_matmul():
    from archcompiler.ops import KINDS

    shape = KINDS["matmul"].shape
    for a, b in (((2, 4, 6), (1, 6, 4)), ((3, 1, 4, 5), (1, 2, 5, 7)), ((4, 5), (5, 3))):
        want = torch.matmul(torch.zeros(2, *a), torch.zeros(2, *b)).shape[1:]
        assert shape({}, [a, b]) == tuple(want)


# products of maps (batched over the channels): two maps, and a map times a 1-channel one broadcast over the channels,
# either side (torch copies it at the broadcast size, and makes its gradient there)
MAPS = ("name: maps\ninput: [4, 6, 6]\nlayers:\n"
        "  - {name: a, op: conv, out: 8, kernel: 1, act: relu}\n"
        "  - {name: b, op: conv, out: 8, kernel: 3, padding: 1, input: input}\n"
        "  - {name: g, op: conv, out: 1, kernel: 1, input: input}\n"
        "  - {name: ab, op: matmul, inputs: [a, b]}\n"
        "  - {name: ag, op: matmul, inputs: [ab, g]}\n"
        "  - {name: ga, op: matmul, inputs: [g, a]}\n"
        "  - {name: s, op: add, inputs: [ag, ga]}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


@pytest.mark.parametrize("product", ["[a, b]", "[a, g]", "[g, a]"], ids=["maps", "broadcast-second",
                                                                          "broadcast-first"])
def test_memory_matches_a_measurement(product):
    """Inference peak exactly, a training step within 1%: autograd keeps both inputs, a broadcast one as its copy
    at the broadcast size, which the forward makes; the backward makes each input's gradient (a broadcast one's at
    the broadcast size, then summed down)."""
    assert_memory_measured("name: maps\ninput: [4, 6, 6]\nlayers:\n"
                           "  - {name: a, op: conv, out: 8, kernel: 1, act: relu}\n"
                           + ("  - {name: b, op: conv, out: 8, kernel: 3, padding: 1, input: input}\n"
                              if "b" in product else "")
                           + ("  - {name: g, op: conv, out: 1, kernel: 1, input: input}\n" if "g" in product else "")
                           + "  - {name: c, op: conv, out: 8, kernel: 3, padding: 1, input: input}\n"
                           f"  - {{name: ab, op: matmul, inputs: {product}}}\n"
                           "  - {name: s, op: add, inputs: [ab, c]}\n"
                           "  - {name: p, op: global_avg_pool}\n"
                           "  - {name: fc, op: linear, out: 2}\n")


def test_autograd_keeps_both_inputs_a_broadcast_one_as_its_copy_measured_on_torch():
    import math

    from archcompiler.ops import KINDS

    for sa, sb in (((6, 5), (5, 7)), ((8, 6, 5), (8, 5, 7)), ((8, 6, 5), (1, 5, 7))):
        a, b = torch.randn(4, *sa, requires_grad=True), torch.randn(4, *sb, requires_grad=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, out=saved: out.append(t.numel()) or t, lambda t: t):
            y = torch.matmul(a, b)
        kinds, extra = KINDS["matmul"].saves({}, [sa, sb], tuple(y.shape[1:]))
        assert kinds == ("input",) and sum(saved) == 4 * (math.prod(sa) + math.prod(sb) + extra), (sa, sb)


def test_shapes_that_do_not_multiply_are_refused_at_the_layer():
    """At the product's line, naming both shapes: an inner dim that differs; a flat vector times a sequence."""
    cases = ((SPEC.replace("{name: q, op: linear, out: 6", "{name: q, op: linear, out: 5"), 8,
              "the first input's last dim to equal the second's next to last", "6x5 and 6x6"),
             (SPEC.replace("inputs: [vt, mix]", "inputs: [mt, mix]")
              .replace("  - {name: gram,", "  - {name: mt, op: token_mean, input: vt}\n  - {name: gram,"), 14,
              "the same number of dims", "6 and 6x8"))
    for text, line, said, shapes in cases:
        with pytest.raises(GraphError) as info:
            archcompiler.analyze(text)
        problem = info.value.errors[0]
        assert said in problem.message and shapes in problem.message and problem.line == line, problem


@pytest.mark.slow
def test_a_hand_written_spec_validates_counts_and_builds_in_a_fresh_process(tmp_path):
    (tmp_path / "mm.yaml").write_text(SPEC)
    for args in (("validate", "mm.yaml"), ("flops", "mm.yaml"), ("build", "mm.yaml", "-q", "-o", "mm.pt")):
        done = run_archc(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr


class Products(nn.Module):
    """Attention written out with every product torch has: @, torch.matmul, x.matmul, torch.bmm."""

    INPUT_SHAPE = (3, 6, 6)

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 2, 2)
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        a = (self.q(t) @ self.k(t).transpose(1, 2)).softmax(-1)
        t = torch.matmul(a, t) + a.matmul(t)
        t = torch.bmm(a, t)
        return self.fc(t.mean(1))


def test_the_module_imports_exactly():
    """In this process (the command's fresh process is the slow test below): verified, and the same logits."""
    model = trained_like(Products()).eval()
    assert_imports_back(model, archcompiler.import_module(model), atol=1e-5)


@pytest.mark.slow
def test_a_module_that_multiplies_imports_exactly_through_the_command(tmp_path):
    import inspect

    (tmp_path / "products.py").write_text("import torch\nfrom torch import nn\n\n\n" + inspect.getsource(Products))
    done = run_archc("import", "products.py:Products", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert text.count("op: matmul") == 4 and "op: linear, out: 8, over: tokens" in text, text


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["archc", "torchscript-13", "torchscript-17"])
def test_the_onnx_round_trip_gives_the_same_values(tmp_path, exporter):
    """A MatMul of two layers' outputs is a matmul (the file's transposes of a sequence and its patch embedding's
    reshapes archc's ONNX import does not read in every exporter's form: the products of maps here)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    text = onnx_round_trip(tmp_path, MAPS, exporter, (4, 6, 6))
    assert text.count("op: matmul") == 3, text
