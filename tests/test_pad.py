"""pad (torch's F.pad, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d; ONNX Pad), an op
added as one module (archcompiler/ops/pad.py) and nothing else in the package (issue #32): against F.pad its
shape, parameters, FLOPs, memory (measured), receptive field and logits, per side, constant (zeros and another
fill), reflect and replicate; the located errors; archc import of a module that pads as timm's HGNetV2 stem does
(F.pad before a 2 x 2 convolution and a 2 x 2 max pool with ceil_mode), of the padding modules and of pads
computed from the input's size, in a fresh process; what is refused, saying why; and ONNX: archc's own export,
and Pad nodes no reader's padding takes (each opset's form), equal to onnxruntime."""

from __future__ import annotations

import pytest
from conftest import assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import GraphError
from archcompiler.errors import BackendError, SpecError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# HGNetV2's stem (a pad read by a 2 x 2 convolution and a ceil-mode 2 x 2 max pool), then a fill other than zero,
# reflect and replicate
SPEC = ("name: padded\ninput: [3, 10, 10]\nlayers:\n"
        "  - {name: c1, op: conv, out: 8, kernel: 3, stride: 2, padding: 1, act: relu}\n"
        "  - {name: p1, op: pad, right: 1, bottom: 1}\n"
        "  - {name: c2, op: conv, out: 8, kernel: 2}\n"
        "  - {name: pool, op: max_pool, kernel: 2, stride: 1, ceil_mode: true, input: p1}\n"
        "  - {name: cat, op: concat, inputs: [pool, c2]}\n"
        "  - {name: p2, op: pad, left: 2, top: 1, bottom: 3, value: -0.5}\n"
        "  - {name: p3, op: pad, left: 3, right: 1, top: 2, mode: reflect}\n"
        "  - {name: p4, op: pad, right: 2, bottom: 6, mode: replicate}\n"
        "  - {name: c3, op: conv, out: 4, kernel: 3, stride: 2}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")
SIZES = {"p1": [8, 6, 6], "p2": [16, 9, 7], "p3": [16, 11, 11], "p4": [16, 17, 13]}


def _reference(m, x):
    """The network written by hand with F.pad and the built module's weights."""
    x = F.pad(F.relu(m.c1(x)), (0, 1, 0, 1))
    x = torch.cat([F.max_pool2d(x, 2, 1, ceil_mode=True), m.c2(x)], 1)
    x = F.pad(x, (2, 0, 1, 3), value=-0.5)
    x = F.pad(F.pad(x, (3, 1, 2, 0), mode="reflect"), (0, 2, 0, 6), mode="replicate")
    return m.fc(torch.flatten(F.adaptive_avg_pool2d(m.c3(x), 1), 1))


def test_shape_params_flops_and_logits_agree_with_torch():
    """The output is the input plus each side's pixels; no parameters, no MACs and no element operations (a copy:
    FlopCounterMode counts the convolutions and the linear layer alone); the logits equal F.pad's by hand, in
    TorchScript too."""
    import inspect

    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert {k: rows[k]["output"] for k in SIZES} == SIZES
    assert all(rows[k]["params"] == rows[k]["buffers"] == rows[k]["macs"] == 0 for k in SIZES)
    assert report["by_op"]["pad"] == {**report["by_op"]["pad"], "count": 4, "elementwise": 0}
    model = archcompiler.build(SPEC, seed=0).eval()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net in (model, lambda x: _reference(model, x)):
            with FlopCounterMode(display=False) as counter:
                net(x)
            assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
        assert torch.equal(model(x), _reference(model, x))
        assert torch.equal(torch.jit.script(model)(x), model(x))
    source = inspect.getsource(type(model).forward)
    for call in ("F.pad(x, (0, 1, 0, 1))", "F.pad(x, (2, 0, 1, 3), value=-0.5)", "F.pad(x, (3, 1, 2, 0), mode='reflect')",
                 "F.pad(x, (0, 2, 0, 6), mode='replicate')"):
        assert call in source, call


def test_the_receptive_field_moves_by_the_pads_before_it():
    """A padded pixel is one input pixel (kernel 1): the field's size is unchanged; its start moves by the top and
    left pads (the first output pixel lies in the padding)."""
    text = ("name: rf\ninput: [3, 8, 8]\nlayers:\n"
            "  - {name: c, op: conv, out: 4, kernel: 3}\n"
            "  - {name: p, op: pad, left: 2, top: 1, right: 1}\n"
            "  - {name: c2, op: conv, out: 4, kernel: 3, stride: 2}\n"
            "  - {name: g, op: global_avg_pool}\n"
            "  - {name: fc, op: linear, out: 2}\n")
    from archcompiler.ir import lower
    from archcompiler.passes.receptive_field import annotate_receptive_field
    from archcompiler.passes.shapes import infer_shapes

    g = annotate_receptive_field(infer_shapes(lower(archcompiler.load_spec(text))))
    rows = {r["name"]: r["receptive_field"] for r in archcompiler.analyze(text)["rows"]}
    assert rows["c"] == rows["p"] == [3, 3] and rows["c2"] == [5, 5]
    assert g.nodes["p"]["rf"]["start"] == (0.0, -1.0)      # centre 1 minus the pads (1 top, 2 left)


# (ends in a flatten: archc has a global average pool keep its input for the backward pass, which torch's, a mean,
# does not)
def test_memory_matches_a_measurement():
    """Inference peak exactly, a training step within 1%: no workspace; constant keeps nothing for the backward
    pass, reflect and replicate their input."""
    assert_memory_measured(SPEC.replace("op: global_avg_pool", "op: flatten"))


@pytest.mark.parametrize("mode, kw, saved", [("constant", {}, ()), ("constant", {"value": 1.5}, ()),
                                             ("reflect", {}, ("input",)), ("replicate", {}, ("input",))])
def test_what_autograd_keeps_and_allocates_is_measured(mode, kw, saved):
    """On torch itself: what autograd saves (nothing, or the input itself); forward and backward each allocate one
    tensor (the output, the input's gradient)."""
    from archcompiler.measure.memory import LiveTensors
    from archcompiler.ops import KINDS

    a = torch.randn(4, 8, 9, 7, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        y = F.pad(a, (3, 1, 2, 0), mode=mode, **kw)
    assert [t is a or t.data_ptr() == a.data_ptr() and t.shape == a.shape for t in kept] == [True] * len(saved)
    with LiveTensors() as live:
        live.hold(a)
        before = live.current
        with torch.no_grad():
            y2 = F.pad(a, (3, 1, 2, 0), mode=mode, **kw)
        assert live.peak - before == y2.numel() * 4
    y = F.pad(a, (3, 1, 2, 0), mode=mode, **kw)           # (without the hooks, which change what backward makes)
    g = torch.randn_like(y)
    with LiveTensors() as live:
        live.hold(g)
        before = live.current
        torch.autograd.grad(y, a, g)
    assert live.peak - before == a.numel() * 4
    attrs = {"left": 3, "right": 1, "top": 2, "bottom": 0, "value": kw.get("value", 0.0), "mode": mode}
    op = KINDS["pad"]
    assert op.saves(attrs, [(8, 9, 7)], (8, 11, 11)) == (saved, 0)
    assert op.workspace(attrs, [(8, 9, 7)], (8, 11, 11)) == op.backward_workspace(attrs, [(8, 9, 7)], (8, 11, 11)) == 0


def test_errors_are_located_at_the_layer():
    cases = [  # (change, what the message says, line)
        ("{name: p3, op: pad, left: 3, right: 1, top: 2, mode: reflect}",
         "{name: p3, op: pad, left: 7, mode: reflect}", "reflect pads the left by 7 pixels, which the 7-pixel width", 10),
        ("{name: p3, op: pad, left: 3, right: 1, top: 2, mode: reflect}",
         "{name: p3, op: pad, left: 3, mode: reflect, value: 1}", "'value' fills the constant mode's pixels", 10),
        ("{name: p3, op: pad, left: 3, right: 1, top: 2, mode: reflect}",
         "{name: p3, op: pad, left: 3, mode: circular}", "'constant', 'reflect' or 'replicate'", 10),
        ("{name: p3, op: pad, left: 3, right: 1, top: 2, mode: reflect}",
         "{name: p3, op: pad, left: -1}", "greater than or equal to 0", 10),
        ("{name: fc, op: linear, out: 2}", "{name: fc, op: linear, out: 2}\n  - {name: p5, op: pad, left: 1}",
         "needs an image", 15),
    ]
    for old, new, said, line in cases:
        with pytest.raises((GraphError, SpecError)) as info:
            archcompiler.analyze(SPEC.replace(old, new))
        problem = info.value.errors[0]
        assert said in problem.message and problem.line == line, (new, problem.message, problem.line)


def test_it_is_drawn_listed_and_timed(capsys, tmp_path):
    from archcompiler.cli import main
    from archcompiler.ops import KINDS
    from archcompiler.spec.schema import schema_text

    (tmp_path / "pad.yaml").write_text(SPEC)
    assert main(["flops", str(tmp_path / "pad.yaml")]) == 0
    assert any(line.split()[:2] == ["p3", "pad"] for line in capsys.readouterr().out.splitlines())
    assert '"const": "pad"' in schema_text()
    op = KINDS["pad"]
    attrs = {"left": 0, "right": 1, "top": 0, "bottom": 1, "value": 0.0, "mode": "constant"}
    kernel = op.latency.kernel(attrs, [(8, 5, 5)], (8, 6, 6))
    assert (kernel.kind, kernel.work) == ("concat", 8 * 36)        # a copy into the larger map
    assert op.style.detail(attrs) == "right 1, bottom 1"
    assert op.style.detail({**attrs, "left": 2, "mode": "reflect"}) == "left 2, right 1, bottom 1 reflect"
    assert op.style.detail({**attrs, "value": -0.5}) == "right 1, bottom 1 value -0.5"


# ----------------------------------------------------------------------------- archc import from torch


class Stem(nn.Module):
    """timm's HGNetV2 StemV2: one zero pad of the right and bottom read by a 2 x 2 convolution and a 2 x 2 max pool
    with ceil_mode, another before the second 2 x 2 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.stem2a = nn.Sequential(nn.Conv2d(8, 4, 2, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.stem2b = nn.Sequential(nn.Conv2d(4, 8, 2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x):
        x = self.stem1(x) - 0.25               # (some values below zero: the pool sees the zero padding)
        x = F.pad(x, (0, 1, 0, 1))
        x2 = F.pad(self.stem2a(x), (0, 1, 0, 1))
        return torch.cat([self.pool(x), self.stem2b(x2)], dim=1)


class Net(nn.Module):
    """The stem, then each padding module, F.pad with its mode as an argument, and pads computed from the map's
    size (timm's patch embeddings: up to a multiple of 4)."""

    INPUT_SHAPE = (3, 17, 19)

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem()
        self.zero = nn.ZeroPad2d((1, 0, 1, 0))
        self.fill = nn.ConstantPad2d(2, 0.75)
        self.mirror = nn.ReflectionPad2d((1, 2, 0, 3))
        self.edge = nn.ReplicationPad2d(1)
        self.conv = nn.Conv2d(16, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.edge(self.mirror(self.fill(self.zero(self.stem(x)))))
        x = F.pad(x, [1, 1, 0, 0], "reflect")
        x = self.conv(x)
        x = F.pad(x, (0, (4 - x.shape[-1] % 4) % 4, 0, (4 - x.shape[-2] % 4) % 4), value=-1.0)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


PADS = ["{name: stem.pad, op: pad, right: 1, bottom: 1}", "{name: stem.pad_1, op: pad, right: 1, bottom: 1}",
        "{name: zero, op: pad, left: 1, top: 1}", "{name: fill, op: pad, left: 2, right: 2, top: 2, bottom: 2, value: 0.75}",
        "{name: mirror, op: pad, left: 1, right: 2, bottom: 3, mode: reflect}",
        "{name: edge, op: pad, left: 1, right: 1, top: 1, bottom: 1, mode: replicate}",
        "op: pad, left: 1, right: 1, mode: reflect}", "{name: pad_1, op: pad, bottom: 3, value: -1.0}"]


def test_archc_import_of_a_module_that_pads_in_a_fresh_process(tmp_path):
    """archc import verifies the spec against the module (exit 0: exact); built here again, the module's
    state_dict loads strictly and the logits are equal."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    module = source[source.index("class Stem(nn.Module):"):source.index("PADS = [")]
    (tmp_path / "padnet.py").write_text("import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n\n\n"
                                        + module)
    done = run_archc("import", "padnet.py:Net", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert all(line in text for line in PADS), text
    original = trained_like(Net())
    rebuilt = archcompiler.build(archcompiler.load_spec(text)).eval()
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, *Net.INPUT_SHAPE)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


@pytest.mark.parametrize("pad, said", [
    (nn.ZeroPad2d((-1, 1, -1, 1)), "a negative pad [-1, 1, -1, 1] (a crop"),
    (lambda x: F.pad(x, (1, 1, 1, 1), mode="circular"), "mode 'circular'"),
    (lambda x: F.pad(x, (1, 1, 1, 1, 1, 0)), "pads [1, 1, 1, 1, 1, 0] that pad the channels or the batch"),
    (lambda x: F.pad(x, (1, 1, 1, 1), value=float("-inf")), "a fill of -inf"),
    (lambda x: F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1)).permute(0, 3, 1, 2), "a pad of a channels-last view"),
])
def test_what_archcs_pad_does_not_compute_is_refused_saying_why(pad, said):
    class Pads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.pad = pad if isinstance(pad, nn.Module) else None

        def forward(self, x):
            x = self.conv(x)
            return self.pad(x) if self.pad is not None else pad(x)

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Pads(), input=(3, 8, 8))
    message = info.value.errors[0].message
    assert said in message and "\n" not in message, message


# ----------------------------------------------------------------------------- archc import from ONNX


def test_archcs_onnx_export_imports_with_the_same_logits(tmp_path):
    """The exporter writes each pad as a Pad (reflect, edge); the zero Pad that the 2 x 2 convolution and the pool
    both read stays a pad for the pool (the convolution's reader takes it as its own 'same' padding)."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from archcompiler.backends.torch.export import export
    from archcompiler.cli import main

    spec = archcompiler.load_spec(SPEC)
    original = archcompiler.build(spec, seed=0).eval()
    export(original, spec, "onnx", tmp_path / "pad.onnx")
    assert main(["import", str(tmp_path / "pad.onnx"), "-o", str(tmp_path / "pad.yaml")]) == 0
    imported = archcompiler.load_spec(tmp_path / "pad.yaml")
    rebuilt = archcompiler.build(imported, weights=str(tmp_path / "pad.safetensors")).eval()
    rows = {r["name"]: r["output"] for r in archcompiler.analyze(imported)["rows"]}
    pads = [lay for lay in imported.layers if lay.op == "pad"]
    assert [rows[lay.name] for lay in pads] == list(SIZES.values())
    assert [lay.spec.mode for lay in pads] == ["constant", "constant", "reflect", "replicate"]
    x = torch.randn(1, 3, 10, 10)
    (y,) = onnxruntime.InferenceSession(str(tmp_path / "pad.onnx")).run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), torch.from_numpy(y), rtol=1e-5, atol=1e-5)


def _pad_graph(tmp_path, attrs, inputs, opset):
    """A Relu, then a Pad of its 1 x 2 x 4 x 5 map (the other inputs constants: name -> array, or None: no input),
    so no convolution or pool takes the Pad as its own padding."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    names = ["r"] + [("" if v is None else k) for k, v in inputs.items()]
    consts = [numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items() if v is not None]
    nodes = [helper.make_node("Relu", ["image"], ["r"]), helper.make_node("Pad", names, ["logits"], **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 5])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], consts)
    path = tmp_path / "pad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _floats(*v):
    import numpy as np

    return np.array(v, np.float32)


def _ints(*v):
    import numpy as np

    return np.array(v, np.int64)


@pytest.mark.parametrize("attrs, inputs, opset, read", [
    ({"mode": "constant"}, {"pads": _ints(0, 0, 0, 1, 0, 0, 1, 0), "value": None}, 13,
     "op: pad, left: 1, bottom: 1}"),
    ({"mode": "reflect"}, {"pads": _ints(0, 0, 1, 2, 0, 0, 3, 0)}, 13, "left: 2, top: 1, bottom: 3, mode: reflect}"),
    ({"mode": "edge"}, {"pads": _ints(0, 0, 0, 0, 0, 0, 2, 2)}, 13, "right: 2, bottom: 2, mode: replicate}"),
    ({"mode": "constant", "pads": [0, 0, 1, 1, 0, 0, 1, 1], "value": -2.5}, {}, 10,
     "left: 1, right: 1, top: 1, bottom: 1, value: -2.5}"),
    ({}, {"pads": _ints(1, 0, 2, 3), "value": _floats(0.5), "axes": _ints(2, -1)}, 18,
     "op: pad, right: 3, top: 1, bottom: 2, value: 0.5}"),
    ({}, {"pads": _ints(0, 0, 0, 0, 0, 0, 0, 0)}, 13, "{name: pad, op: pad}"),
])
def test_pad_nodes_no_reader_takes_import_and_equal_onnxruntime(attrs, inputs, opset, read, tmp_path):
    """Each opset's form: pads and fill as inputs (11 on), as attributes (before 11), by axes (18 on); constant,
    reflect, edge (replicate); a Pad of no pixels is a copy. archc import checks the spec against onnxruntime
    (exit 0: equal), and here again."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from archcompiler.cli import main

    path = _pad_graph(tmp_path, attrs, inputs, opset)
    assert main(["import", str(path), "-o", str(tmp_path / "pad.yaml")]) == 0
    text = (tmp_path / "pad.yaml").read_text()
    assert read in text, text
    x = torch.randn(1, 2, 4, 5)
    (y,) = onnxruntime.InferenceSession(str(path)).run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert torch.equal(archcompiler.build(text).eval()(x), torch.from_numpy(y))


@pytest.mark.parametrize("attrs, inputs, said", [
    ({"mode": "wrap"}, {"pads": _ints(0, 0, 1, 1, 0, 0, 1, 1)}, "mode 'wrap'"),
    ({}, {"pads": _ints(0, 1, 1, 1, 0, 0, 1, 1)}, "that pad the batch or the channels"),
    ({}, {"pads": _ints(0, 0, -1, 1, 0, 0, 1, 1)}, "a negative pad"),
    ({}, {"pads": _ints(0, 0, 1, 1, 0, 0, 1, 1), "value": _floats(1, 2)}, "a fill of more than one number"),
])
def test_what_archcs_pad_does_not_compute_is_refused_by_node_saying_why(attrs, inputs, said, tmp_path):
    pytest.importorskip("onnx")
    from archcompiler.importers.onnx import import_onnx

    with pytest.raises(BackendError) as info:
        import_onnx(_pad_graph(tmp_path, attrs, inputs, 19 if attrs.get("mode") == "wrap" else 13), None)
    assert "(Pad)" in str(info.value) and said in str(info.value), str(info.value)
