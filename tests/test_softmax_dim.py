"""softmax over a dim (issue #32): ``op: softmax`` with ``dim`` (archcompiler/ops/softmax.py). dim 1, the default,
is the channels' softmax and a final one the model's probability output, as before; another dim is a layer of the
network. Against torch: shapes, parameters, FLOPs, values and memory (what autograd keeps and the backward makes,
measured); the located error of a bad dim; a hand-written spec through archc validate, flops and build in a fresh
process; archc import of F.softmax(x, dim), x.softmax(d) and nn.Softmax(dim) through the command; and the ONNX
round trip, both torch exporters."""

from __future__ import annotations

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc, trained_like
from test_reduce import onnx_round_trip

import archcompiler
from archcompiler import GraphError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# a softmax over the width (dim -1) and one over the height (dim 2) weighting the map, then the final softmax over
# the classes: the probability output
SPEC = ("name: sm\ninput: [3, 6, 7]\nlayers:\n"
        "  - {name: c1, op: conv, out: 4, kernel: 3, padding: 1}\n"
        "  - {name: w, op: softmax, dim: -1}\n"
        "  - {name: h, op: softmax, dim: 2, input: c1}\n"
        "  - {name: g, op: mul, inputs: [w, h]}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 3}\n"
        "  - {name: prob, op: softmax}\n")


def _reference(m, x):
    c1 = m.c1(x)
    g = F.softmax(c1, dim=-1) * F.softmax(c1, dim=2)
    return m.fc(torch.flatten(F.adaptive_avg_pool2d(g, 1), 1))


def test_shapes_flops_values_and_the_probability_output():
    """The shape kept, no parameters, no MACs, three element operations per element; forward() returns the
    logits before the final softmax over dim 1 (predict_proba applies it), and the softmaxes over other dims are
    computed in forward."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["w"]["output"] == rows["h"]["output"] == [4, 6, 7]
    assert rows["w"]["params"] == rows["w"]["macs"] == rows["h"]["macs"] == 0
    assert report["by_op"]["softmax_over"]["elementwise"] == 2 * 2 * 3 * 4 * 6 * 7
    model = archcompiler.build(SPEC, seed=0).eval()
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert counter.get_total_flops() == report["total"]["flops"]
    with torch.no_grad():
        assert torch.allclose(y, _reference(model, x), rtol=1e-6, atol=1e-6)
        assert torch.allclose(model.predict_proba(x), F.softmax(y, 1))


@pytest.mark.parametrize("text", [SPEC.replace("  - {name: prob, op: softmax}\n", ""),
                                  "name: big\ninput: [3, 16, 16]\nlayers:\n"
                                  "  - {name: c1, op: conv, out: 64, kernel: 3, padding: 1}\n"
                                  "  - {name: w, op: softmax, dim: -1}\n  - {name: p, op: global_avg_pool}\n"
                                  "  - {name: fc, op: linear, out: 3}\n"], ids=["two", "dominant"])
def test_memory_matches_a_measurement(text):
    """Autograd keeps a softmax's output; its backward makes the input's gradient alone (measured, also where the
    softmax's backward is the step's peak)."""
    assert_memory_measured(text)


def test_autograd_keeps_the_output_measured_on_torch():
    from archcompiler.ops import KINDS

    x = torch.randn(4, 8, 6, 5, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = F.softmax(x, -1)
    assert KINDS["softmax_over"].saves({"dim": -1}, [(8, 6, 5)], (8, 6, 5)) == (("output",), 0)
    assert saved == [y.numel()]


def test_a_bad_dim_is_refused_at_the_layer():
    for dim, said in (("4", "over dim 4: the input 6x7x4 has dims 1 to 3"), ("-4", "that is the batch"),
                      ("0", "that is the batch")):
        with pytest.raises(GraphError) as info:
            archcompiler.analyze(SPEC.replace("{name: w, op: softmax, dim: -1}", f"{{name: w, op: softmax, dim: {dim}}}"))
        problem = info.value.errors[0]
        assert said in problem.message and problem.line == 5, problem


@pytest.mark.slow
def test_a_hand_written_spec_validates_counts_and_builds_in_a_fresh_process(tmp_path):
    (tmp_path / "sm.yaml").write_text(SPEC)
    for args in (("validate", "sm.yaml"), ("flops", "sm.yaml"), ("build", "sm.yaml", "-q", "-o", "sm.pt")):
        done = run_archc(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr


class Scores(nn.Module):
    """Softmax written every way torch writes it: nn.Softmax(dim=-1), F.softmax over a map's height, x.softmax over
    the channels; over a sequence's features and its tokens."""

    INPUT_SHAPE = (3, 6, 6)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.sm = nn.Softmax(dim=-1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv(x)
        x = x * self.sm(x) * F.softmax(x, dim=2) * x.softmax(1)
        t = x.flatten(2).transpose(1, 2)
        t = t * t.softmax(-1) * F.softmax(t, 1)
        return self.fc(t.mean(1))


def test_the_module_imports_exactly():
    """In this process (the command's fresh process is the slow test below): verified, and the same logits."""
    model = trained_like(Scores()).eval()
    assert_imports_back(model, archcompiler.import_module(model), atol=1e-5)


@pytest.mark.slow
def test_a_module_imports_exactly_through_the_command(tmp_path):
    import inspect

    (tmp_path / "scores.py").write_text("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
                                        + inspect.getsource(Scores))
    done = run_archc("import", "scores.py:Scores", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    for line in ("{name: sm, op: softmax, dim: -1}", "op: softmax, dim: 2,", "op: softmax, input: conv}",
                 "op: softmax, dim: -1}", "op: softmax, input: to_tokens}"):
        assert line in text, (line, text)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["archc", "torchscript-13", "torchscript-17"])
def test_the_onnx_round_trip_gives_the_same_values(tmp_path, exporter):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    spec = SPEC.replace("  - {name: prob, op: softmax}\n", "")
    text = onnx_round_trip(tmp_path, spec, exporter, (3, 6, 7))
    assert "dim: -1" in text or "dim: 3" in text, text
    assert "dim: 2" in text, text


@pytest.mark.parametrize("opset, flat, refused", [(11, False, True), (11, True, False), (13, False, False)])
def test_an_older_opsets_softmax_over_several_dims_is_refused(tmp_path, opset, flat, refused):
    """Before opset 13 ONNX's Softmax(axis=1) normalises over every dim from 1 on (C x H x W together), not
    over the channels: archc reads it only where that is one dim (a flat vector), and refuses the rest in one
    line."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flat")] if flat else []
    nodes.append(helper.make_node("Softmax", ["f" if flat else "x"], ["y"], axis=1, name="soft"))
    out = [1, 4] if flat else [1, 4, 3, 3]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)])
    path = tmp_path / "soft.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    done = run_archc("import", str(path), "--no-verify")
    if refused:
        assert done.returncode == 1 and "before opset 13" in done.stderr and "Traceback" not in done.stderr
    else:
        assert done.returncode == 0, done.stderr
