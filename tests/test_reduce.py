"""reduce (issue #32): the mean, sum, maximum or minimum over some of the sample's dims, one module
(archcompiler/ops/reduce.py): against torch its shapes, parameters, FLOPs, values and memory (what autograd keeps
and what the backward makes, measured); the located errors of bad dims; a hand-written spec through archc
validate, flops and build in a fresh process; archc import of a torch module that reduces (x.mean(-1), x.sum,
x.amax, x.max(dim)[0] and .values, torch.amin), the specialised ops keeping priority (a mean over H and W is a
global average pool, over a sequence's tokens token_mean); and the ONNX round trip, both torch exporters."""

from __future__ import annotations

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import GraphError
from archcompiler.errors import SpecError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

# each reduction: a per-channel maximum gating the map, a mean over the channels subtracted, a sum over the width
# (negative dim) multiplied back, a minimum over the height, then a mean over H and W without keepdim (a flat vector)
SPEC = ("name: red\ninput: [3, 8, 10]\nlayers:\n"
        "  - {name: c1, op: conv, out: 6, kernel: 3, padding: 1}\n"
        "  - {name: mx, op: reduce, how: max, dims: [2, 3], keepdim: true}\n"
        "  - {name: g, op: mul, inputs: [c1, mx]}\n"
        "  - {name: mean, op: reduce, dims: 1, keepdim: true}\n"
        "  - {name: d, op: sub, inputs: [g, mean]}\n"
        "  - {name: s, op: reduce, how: sum, dims: -1, keepdim: true}\n"
        "  - {name: e, op: mul, inputs: [d, s]}\n"
        "  - {name: mn, op: reduce, how: min, dims: 2, keepdim: true}\n"
        "  - {name: f, op: div, inputs: [e, mn]}\n"
        "  - {name: p, op: reduce, dims: [-2, -1]}\n"
        "  - {name: fc, op: linear, out: 2}\n")
SIZES = {"mx": [6, 1, 1], "mean": [1, 8, 10], "s": [6, 8, 1], "mn": [6, 1, 10], "p": [6]}


def _reference(m, x):
    """The network written by hand with torch's reductions and the built module's weights."""
    c1 = m.c1(x)
    d = c1 * torch.amax(c1, (2, 3), keepdim=True)
    d = d - d.mean(1, keepdim=True)
    e = d * d.sum(-1, keepdim=True)
    f = e / torch.min(e, 2, keepdim=True)[0]
    return m.fc(f.mean((-2, -1)))


def test_shapes_params_flops_and_values_agree_with_torch():
    """torch's shapes; no parameters and no MACs (FlopCounterMode counts the convolution and the linear layer
    alone); one element operation per input element; the logits equal the hand-written network's."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert {k: rows[k]["output"] for k in SIZES} == SIZES
    assert all(rows[k]["params"] == rows[k]["macs"] == 0 for k in SIZES)
    assert report["by_op"]["reduce"]["elementwise"] + report["by_op"]["reduce_sum"]["elementwise"] == 2 * 5 * 480
    model = archcompiler.build(SPEC, seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    x = torch.randn(2, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net in (model, lambda x: _reference(model, x)):
            with FlopCounterMode(display=False) as counter:
                y = net(x)
            assert tuple(y.shape) == (2, 2)
            assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
        assert torch.allclose(model(x), _reference(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("how", ["mean", "sum", "max", "min"])
def test_memory_matches_a_measurement(how):
    """Inference peak exactly, a training step within 1%: a reduction over the channels, kept as a 1 x H x W map
    and multiplied back, then one over the width."""
    text = ("name: m\ninput: [3, 10, 12]\nlayers:\n"
            "  - {name: c1, op: conv, out: 16, kernel: 3, padding: 1}\n"
            f"  - {{name: r, op: reduce, how: {how}, dims: 1, keepdim: true}}\n"
            "  - {name: g, op: mul, inputs: [c1, r]}\n"
            "  - {name: c2, op: conv, out: 8, kernel: 1}\n"
            f"  - {{name: r2, op: reduce, how: {how}, dims: -1}}\n"
            "  - {name: f, op: flatten}\n"
            "  - {name: fc, op: linear, out: 2}\n")
    assert_memory_measured(text)


def test_what_autograd_keeps_and_the_backward_makes_measured_on_torch():
    """The module's facts against torch itself: what autograd saves (mean, sum: nothing; amax, amin: the input
    and the output) and the most the backward holds beyond the output's gradient (sum: nothing, the gradient
    expanded; mean: the input's gradient; amax, amin: it, a byte mask of the input and four output-sized
    temporaries)."""
    import math

    from archcompiler.measure.memory import LiveTensors
    from archcompiler.ops import KINDS

    for how, fn in (("mean", torch.mean), ("sum", torch.sum), ("max", torch.amax), ("min", torch.amin)):
        for dims, keep in (((2, 3), True), ((1,), False), ((-1,), True)):
            x = torch.randn(4, 8, 6, 5, requires_grad=True)
            saved = []
            with torch.autograd.graph.saved_tensors_hooks(lambda t, out=saved: out.append(t.numel()) or t,
                                                          lambda t: t):
                fn(x, dims, keepdim=keep)
            y = fn(x, dims, keepdim=keep)
            facts = KINDS["reduce_sum" if how == "sum" else "reduce"]
            a, ins, out = {"how": how, "dims": dims, "keepdim": keep}, [(8, 6, 5)], tuple(y.shape[1:])
            kinds, extra = facts.saves(a, ins, out)
            assert sorted(saved) == sorted({"input": x.numel(), "output": y.numel()}[k] for k in kinds), (how, dims)
            g = torch.randn_like(y)
            with LiveTensors() as live:
                live.hold(g)
                before = live.current
                torch.autograd.grad(y, x, g)
            grad = 0 if facts.grad_passthrough else 16 * math.prod(ins[0])       # float32, a batch of 4
            assert live.peak - before == grad + 16 * facts.backward_workspace(a, ins, out), (how, dims)


def test_bad_dims_are_refused_at_the_layer():
    """A dim outside the input's (a map's 1 to 3, -1 to -3) or the batch's -4, at the layer's line, naming the
    input's shape; dim 0, or a dim twice, as the spec is read; a reduction of every dim without keepdim."""
    line = "{name: mean, op: reduce, dims: 1, keepdim: true}"
    for fields, said in (("dims: 4", "over dim 4: the input 8x10x6 has dims 1 to 3"), ("dims: -4", "that is the batch"),
                         ("dims: [1, 2, 3], keepdim: false", "leaves one number per sample")):
        with pytest.raises(GraphError) as info:
            archcompiler.analyze(SPEC.replace(line, f"{{name: mean, op: reduce, {fields}}}"))
        problem = info.value.errors[0]
        assert said in problem.message and problem.line == 7, problem
    for dims, said in (("0", "dim 0 is the batch"), ("[2, 2]", "names a dim twice"), ("[]", "at least 1")):
        with pytest.raises(SpecError) as info:
            archcompiler.analyze(SPEC.replace("{name: mean, op: reduce, dims: 1,", f"{{name: mean, op: reduce, "
                                                                                   f"dims: {dims},"))
        assert said in info.value.errors[0].message and info.value.errors[0].line == 7, info.value.errors[0]


@pytest.mark.slow
def test_a_hand_written_spec_validates_counts_and_builds_in_a_fresh_process(tmp_path):
    (tmp_path / "red.yaml").write_text(SPEC)
    for args in (("validate", "red.yaml"), ("flops", "red.yaml"), ("build", "red.yaml", "-q", "-o", "red.pt")):
        done = run_archc(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert "reduce" in run_archc("flops", "red.yaml", cwd=tmp_path).stdout


# ----------------------------------------------------------------------------- archc import from torch


class Reducing(nn.Module):
    """Every way torch writes a reduction that archc maps to reduce, beside the two it keeps specialised: a mean
    over H and W (global_avg_pool) and over a sequence's tokens (token_mean)."""

    INPUT_SHAPE = (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(x)
        x = x * x.amax((2, 3), keepdim=True)
        x = x - x.mean(1, keepdim=True)
        x = x / x.max(dim=1, keepdim=True)[0]
        x = x * torch.sum(x, dim=-1, keepdim=True)
        x = x * x.min(2, keepdim=True).values
        x = x - torch.amin(x, -2, keepdim=True)
        x = x * x.mean((2, 3), keepdim=True)                # global_avg_pool
        t = self.fc(x.flatten(2).transpose(1, 2))
        t = t * t.sum(-1, keepdim=True)
        return self.head(t.mean(1) * t.max(1)[0])           # token_mean, a max


def test_the_module_imports_exactly():
    """In this process (the command's fresh process is the slow test below): verified, and the same logits."""
    model = trained_like(Reducing()).eval()
    assert_imports_back(model, archcompiler.import_module(model), atol=1e-5)


@pytest.mark.slow
def test_a_module_that_reduces_imports_exactly_through_the_command(tmp_path):
    import inspect

    (tmp_path / "reducing.py").write_text("import torch\nfrom torch import nn\n\n\n" + inspect.getsource(Reducing))
    done = run_archc("import", "reducing.py:Reducing", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    for line in ("how: max, dims: [2, 3], keepdim: true", "dims: 1, keepdim: true", "how: max, dims: 1, keepdim: "
                 "true", "how: sum, dims: 3, keepdim: true", "how: min, dims: 2, keepdim: true",
                 "how: min, dims: 2, keepdim: true", "op: global_avg_pool", "op: token_mean",
                 "how: sum, dims: 2, keepdim: true", "how: max, dims: 1, input: "):
        assert line in text, (line, text)


def test_the_indices_of_a_maximum_and_a_reduction_of_the_batch_are_refused_saying_why():
    class Indices(nn.Module):
        def forward(self, x):
            return x.max(1)[1].float()

    class Whole(nn.Module):
        def forward(self, x):
            return x * x.sum()

    with pytest.raises(archcompiler.BackendError) as info:
        archcompiler.import_module(Indices(), input=(3, 4, 4))
    assert "the indices of a maximum or minimum" in str(info.value)
    with pytest.raises(archcompiler.BackendError) as info:
        archcompiler.import_module(Whole(), input=(3, 4, 4))
    assert "the batch included" in str(info.value)


# ----------------------------------------------------------------------------- ONNX


def onnx_round_trip(tmp_path, spec: str, exporter: str, shape: tuple[int, ...]) -> str:
    """Export ``spec`` (archc build --emit onnx: the dynamo exporter; or torch's TorchScript exporter at the opset
    ``torchscript-N`` names, of the built module with trained-like weights), import the file back through the
    command, and compare the imported spec built with the weights it wrote with onnxruntime running the file, on
    a seeded input; the imported spec's text."""
    import numpy as np
    import onnxruntime

    (tmp_path / "net.yaml").write_text(spec)
    if exporter == "archc":
        done = run_archc("build", "net.yaml", "--emit", "onnx", "-o", "net.onnx", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    else:
        model = trained_like(archcompiler.build(spec, seed=0)).eval()
        torch.onnx.export(model, (torch.randn(1, *shape),), str(tmp_path / "net.onnx"), dynamo=False,
                          opset_version=int(exporter.split("-")[1]))
    done = run_archc("import", "net.onnx", "-o", "back.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified" in done.stderr, done.stderr
    text = (tmp_path / "back.yaml").read_text()
    back = archcompiler.build(archcompiler.load_spec(text), weights=str(tmp_path / "back.safetensors")).eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        got = back(x).numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max()))), (got, want)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["archc", "torchscript-13", "torchscript-17"])
def test_the_onnx_round_trip_gives_the_same_values(tmp_path, exporter):
    """The dynamo exporter (opset 18: the axes an input) and the TorchScript one (opsets 13 and 17: ReduceMean's,
    ReduceMax's and ReduceMin's axes an attribute, ReduceSum's an input) read back as reduce."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    assert "op: reduce" in onnx_round_trip(tmp_path, SPEC, exporter, (3, 8, 10))
