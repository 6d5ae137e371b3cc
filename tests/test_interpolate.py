"""interpolate (torch's F.interpolate and nn.Upsample; ONNX's Resize), an op added as one module
(archcompiler/ops/interpolate.py) and nothing else in the package (issue #32): against F.interpolate its shape,
parameters, FLOPs, memory (measured), receptive field and logits, nearest and bilinear, by a scale (whole or
fractional) or to a size, with and without align_corners; the located errors; the diagram, the flops table and
the schema; and archc import from a torch module and from ONNX (archc's own export, both torch exporters, and
Resize and Upsample nodes built by hand)."""

from __future__ import annotations

import pytest
from conftest import assert_memory_measured

import archcompiler
from archcompiler import GraphError
from archcompiler.errors import SpecError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# a stride-2 convolution, then each kind of resizing: nearest by a whole factor, bilinear to a size, bilinear with
# align_corners, nearest by fractional factors (one shrinking), bilinear by a fractional factor
SPEC = ("name: up\ninput: [3, 10, 10]\nlayers:\n"
        "  - {name: c1, op: conv, out: 8, kernel: 3, stride: 2, padding: 1}\n"
        "  - {name: up1, op: interpolate, scale: 2}\n"
        "  - {name: c2, op: conv, out: 8, kernel: 3, padding: 1}\n"
        "  - {name: up2, op: interpolate, size: [13, 15], mode: bilinear}\n"
        "  - {name: up3, op: interpolate, scale: 1.5, mode: bilinear, align_corners: true}\n"
        "  - {name: up4, op: interpolate, scale: [0.7, 1.3]}\n"
        "  - {name: up5, op: interpolate, scale: 1.5, mode: bilinear}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")
SIZES = {"up1": [8, 10, 10], "up2": [8, 13, 15], "up3": [8, 19, 22], "up4": [8, 13, 28], "up5": [8, 19, 42]}


def _steps(m, x):
    """The network written by hand with F.interpolate as a torch user writes it (scale_factor where the spec
    gives a scale) and the built module's weights: each resized map, then the logits."""
    out = [F.interpolate(m.c1(x), scale_factor=2)]
    out.append(F.interpolate(m.c2(out[-1]), size=(13, 15), mode="bilinear"))
    out.append(F.interpolate(out[-1], scale_factor=1.5, mode="bilinear", align_corners=True))
    out.append(F.interpolate(out[-1], scale_factor=(0.7, 1.3)))
    out.append(F.interpolate(out[-1], scale_factor=1.5, mode="bilinear"))
    return [*out, m.fc(torch.flatten(F.adaptive_avg_pool2d(out[-1], 1), 1))]


def _reference(m, x):
    return _steps(m, x)[-1]


def test_shape_params_and_flops_agree_with_torch():
    """The output is floor(input x scale) per axis, as torch computes it; no parameters; no MACs (FlopCounterMode
    counts the convolutions and the linear layer, not the resizing); element operations 7 per output pixel for
    bilinear (four neighbours weighted and summed), none for nearest (a copy)."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert {k: rows[k]["output"] for k in SIZES} == SIZES
    assert all(rows[k]["params"] == rows[k]["buffers"] == rows[k]["macs"] == 0 for k in SIZES)
    model = archcompiler.build(SPEC, seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        for net in (model, lambda x: _reference(model, x)):
            with FlopCounterMode(display=False) as counter:
                y = net(x)
            assert tuple(y.shape) == (2, 2)
            assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
        assert [list(t.shape[1:]) for t in _steps(model, x)[:-1]] == list(SIZES.values())   # torch's own sizes
    assert report["by_op"]["interpolate"]["elementwise"] == 2 * 7 * (8 * 13 * 15 + 8 * 19 * 22 + 8 * 19 * 42)
    assert report["by_op"]["interpolate"]["count"] == 5


def test_logits_equal_a_hand_written_reference_and_the_code_writes_static_sizes():
    """The generated forward writes the static output size where torch computes the same values from it (a whole
    factor, a size, align_corners) and keeps the scale factor where it does not (a fractional factor places pixels
    at position / scale, not position x input / output)."""
    import inspect

    model = archcompiler.build(SPEC, seed=0).eval()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), _reference(model, x))
        assert torch.equal(torch.jit.script(model)(x), model(x))          # TorchScript reads it too
    source = inspect.getsource(type(model).forward)
    assert "F.interpolate(x, size=(10, 10), mode='nearest')" in source
    assert "size=(13, 15), mode='bilinear', align_corners=False)" in source
    assert "size=(19, 22), mode='bilinear', align_corners=True)" in source
    assert "scale_factor=(0.7, 1.3), mode='nearest')" in source
    assert "scale_factor=(1.5, 1.5), mode='bilinear', align_corners=False)" in source
    # the size written for a fractional factor would move pixels: why the scale factor stays
    h = torch.randn(1, 8, 13, 15)
    assert not torch.equal(F.interpolate(h, scale_factor=1.5, mode="bilinear"),
                           F.interpolate(h, size=(19, 22), mode="bilinear"))


def test_the_output_size_is_torchs_for_every_factor():
    """floor(input x scale) as torch computes it (in double precision), for factors that do and do not divide."""
    from archcompiler.ops import KINDS

    op = KINDS["interpolate"]
    x = torch.zeros(1, 1, 7, 9)
    for scale in (2, 3, 0.5, 0.3, 1.5, 2.2, 0.7, 1.01, [1.7, 0.4]):
        pair = scale if isinstance(scale, list) else [scale, scale]
        expected = tuple(F.interpolate(x, scale_factor=tuple(pair)).shape[1:])
        assert op.shape({"size": None, "scale": tuple(pair), "mode": "nearest", "align_corners": False},
                        [(1, 7, 9)]) == expected, scale


def test_errors_are_located_at_the_layer():
    cases = [  # (change, what the message says, line)
        ("{name: up4, op: interpolate, scale: [0.7, 1.3]}", "{name: up4, op: interpolate, scale: 0.01}",
         "the 19x22 input times scale 0.01x0.01 leaves no pixel", 9),
        ("{name: up1, op: interpolate, scale: 2}", "{name: up1, op: interpolate, scale: 2, size: 3}",
         "give one of 'scale'", 5),
        ("{name: up1, op: interpolate, scale: 2}", "{name: up1, op: interpolate}", "give one of 'scale'", 5),
        ("{name: up1, op: interpolate, scale: 2}", "{name: up1, op: interpolate, scale: 2, align_corners: true}",
         "align_corners is bilinear's", 5),
        ("{name: up1, op: interpolate, scale: 2}", "{name: up1, op: interpolate, scale: 2, mode: bicubic}",
         "'nearest' or 'bilinear'", 5),
        ("{name: fc, op: linear, out: 2}", "{name: fc, op: linear, out: 2}\n  - {name: up6, op: interpolate, scale: 2}",
         "needs an image", 13),
    ]
    for old, new, said, line in cases:
        with pytest.raises((GraphError, SpecError)) as info:
            archcompiler.analyze(SPEC.replace(old, new))
        problem = info.value.errors[0]
        assert said in problem.message and problem.line == line, (new, problem.message, problem.line)


def test_the_receptive_field_is_an_upper_bound_in_whole_pixels():
    """Nearest reads one input pixel, bilinear two neighbours along each axis (its field grows by one step of the
    input); the step between output pixels, a fraction when upsampling, is held as the input's (a Window counts
    whole pixels), so what follows grows at the coarser step: never less than what a pixel sees."""
    text = ("name: rf\ninput: [3, 16, 16]\nlayers:\n"
            "  - {name: c1, op: conv, out: 4, kernel: 3, stride: 2, padding: 1}\n"
            "  - {name: up, op: interpolate, scale: 2}\n"
            "  - {name: c2, op: conv, out: 4, kernel: 3, padding: 1}\n"
            "  - {name: bi, op: interpolate, scale: 2, mode: bilinear}\n"
            "  - {name: down, op: interpolate, scale: 0.25}\n"
            "  - {name: c3, op: conv, out: 4, kernel: 3, padding: 1}\n"
            "  - {name: p, op: global_avg_pool}\n"
            "  - {name: fc, op: linear, out: 2}\n")
    rows = {r["name"]: r["receptive_field"] for r in archcompiler.analyze(text)["rows"]}
    assert rows["c1"] == rows["up"] == [3, 3]            # nearest adds nothing
    assert rows["c2"] == [7, 7]                          # 3 + 2 x 2 (the input's step: the true one is 5)
    assert rows["bi"] == [9, 9]                          # two neighbours: one step more
    assert rows["down"] == [9, 9]                        # shrinking by 4: one pixel, steps of 4 pixels
    assert rows["c3"] == [9 + 2 * 2 * 4] * 2


# a network whose inference peak is at an upsampling (a 4 x larger map beside its input), bilinear then nearest
MEMORY = ("name: upm\ninput: [3, 8, 8]\nlayers:\n"
          "  - {name: c, op: conv, out: 8, kernel: 3, padding: 1}\n"
          "  - {name: u, op: interpolate, scale: 2, mode: bilinear}\n"
          "  - {name: n, op: interpolate, size: [20, 20]}\n"
          "  - {name: c2, op: conv, out: 4, kernel: 1}\n"
          "  - {name: p, op: global_avg_pool}\n"
          "  - {name: fc, op: linear, out: 2}\n")


# (SPEC ends in a flatten here: archc has a global average pool keep its input for the backward pass, which torch's,
# a mean, does not; the last map, the largest, would count twice)
@pytest.mark.parametrize("text", [MEMORY, SPEC.replace("op: global_avg_pool", "op: flatten")],
                         ids=["peak", "every-kind"])
def test_memory_matches_a_measurement(text):
    """Inference peak exactly, a training step within 1%: no workspace (upsample_nearest2d and upsample_bilinear2d
    write the output alone), and autograd keeps no tensor (their backward reads the sizes alone)."""
    assert_memory_measured(text)


def test_autograd_keeps_nothing_and_the_backward_makes_the_inputs_gradient_alone():
    """What the facts say, measured on torch itself: no saved tensor; forward and backward each allocate one
    tensor (the output, the input's gradient)."""
    from archcompiler.measure.memory import LiveTensors
    from archcompiler.ops import KINDS

    for kw in (dict(scale_factor=2), dict(size=(13, 7), mode="bilinear", align_corners=True),
               dict(scale_factor=1.5, mode="bilinear")):
        a = torch.randn(4, 8, 10, 10, requires_grad=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, out=saved: out.append(t) or t, lambda t: t):
            F.interpolate(a, **kw)
        assert saved == []
        y = F.interpolate(a, **kw)
        g = torch.randn_like(y)
        with LiveTensors() as live:
            live.hold(g)
            before = live.current
            torch.autograd.grad(y, a, g)
        assert live.peak - before == a.numel() * 4
    attrs = {"size": None, "scale": (2, 2), "mode": "bilinear", "align_corners": False}
    op = KINDS["interpolate"]
    assert op.saves(attrs, [(8, 5, 5)], (8, 10, 10)) == ((), 0)
    assert op.workspace(attrs, [(8, 5, 5)], (8, 10, 10)) == op.backward_workspace(attrs, [(8, 5, 5)], (8, 10, 10)) == 0


def test_it_is_drawn_listed_timed_and_in_the_schema(capsys, tmp_path):
    from archcompiler.cli import main
    from archcompiler.ops import KINDS
    from archcompiler.spec.schema import schema_text

    (tmp_path / "up.yaml").write_text(SPEC)
    assert main(["flops", str(tmp_path / "up.yaml")]) == 0
    table = capsys.readouterr().out
    assert any(line.split()[:2] == ["up2", "interpolate"] for line in table.splitlines())
    assert '"const": "interpolate"' in schema_text()
    op = KINDS["interpolate"]
    nearest = {"size": None, "scale": (2, 2), "mode": "nearest", "align_corners": False}
    bilinear = {**nearest, "mode": "bilinear"}
    assert op.latency.kernel(nearest, [(8, 5, 5)], (8, 10, 10)).kind == "concat"       # a copy of the output
    assert op.latency.kernel(nearest, [(8, 5, 5)], (8, 10, 10)).work == 800
    assert op.latency.kernel(bilinear, [(8, 5, 5)], (8, 10, 10)).kind == "avg_pool"    # four reads a pixel
    assert op.latency.kernel(bilinear, [(8, 5, 5)], (8, 10, 10)).work == 4 * 800
    pytest.importorskip("graphviz")
    from archcompiler.backends.dot import build_dot

    dot = build_dot(archcompiler.load_spec(SPEC)).source
    assert "up1\\ninterpolate nearest x2" in dot and "up2\\ninterpolate bilinear to 13x15" in dot
    assert "up3\\ninterpolate bilinear x1.5 (align corners)" in dot and "up4\\ninterpolate nearest x0.7x1.3" in dot


# ----------------------------------------------------------------------------- archc import from torch


class Net(nn.Module):
    """A torch network with each way torch resizes: F.interpolate by a factor and to a size, nn.Upsample
    (bilinear), nn.UpsamplingBilinear2d (align_corners=True), nn.UpsamplingNearest2d, recompute_scale_factor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.corners = nn.UpsamplingBilinear2d(size=(10, 12))
        self.near = nn.UpsamplingNearest2d(scale_factor=2)
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = F.interpolate(self.conv(x), scale_factor=2)
        x = self.near(self.corners(self.up(x)))
        x = F.interpolate(x, size=(15, 17), mode="bilinear", align_corners=False)
        x = F.interpolate(self.conv2(x), scale_factor=1.5, mode="bilinear", recompute_scale_factor=True)
        x = F.interpolate(x, scale_factor=(0.5, 0.75))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_import_from_torch_gives_the_same_logits():
    original = Net().eval()
    text = archcompiler.import_module(original, input=(3, 8, 8))
    for line in ("op: interpolate, scale: 2}", "{name: up, op: interpolate, scale: 2, mode: bilinear}",
                 "{name: corners, op: interpolate, size: [10, 12], mode: bilinear, align_corners: true}",
                 "{name: near, op: interpolate, scale: 2}", "size: [15, 17], mode: bilinear}",
                 "size: [22, 25], mode: bilinear}", "scale: [0.5, 0.75]}"):
        assert line in text, line
    rebuilt = archcompiler.build(text).eval()
    rebuilt.load_state_dict(original.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


@pytest.mark.parametrize("call, said", [
    (lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True), "antialias=True"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="bicubic"), "mode 'bicubic'"),
    (lambda x: F.interpolate(x, scale_factor=2, mode="nearest-exact"), "mode 'nearest-exact'"),
])
def test_import_refuses_what_archcs_interpolate_does_not_compute_saying_why(call, said):
    from archcompiler.errors import BackendError

    class Resizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return call(self.conv(x))

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Resizes(), input=(3, 8, 8))
    assert "F.interpolate()" in str(info.value) and said in str(info.value)


# ----------------------------------------------------------------------------- archc import from ONNX


def _onnx_import(tmp_path, path):
    """``archc import PATH``, then the spec built with the weights it wrote beside it."""
    from archcompiler.cli import main

    out = tmp_path / (path.stem + ".yaml")
    assert main(["import", str(path), "-o", str(out)]) == 0
    spec = archcompiler.load_spec(out)
    return spec, archcompiler.build(spec, weights=str(out.with_suffix(".safetensors"))).eval()


class Small(nn.Module):
    """What both exporters write as constant Resize nodes (no recompute_scale_factor: the TorchScript exporter
    writes its floor as nodes of their own)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.up(F.interpolate(self.conv(x), scale_factor=2))
        x = F.interpolate(x, size=(10, 12), mode="bilinear", align_corners=True)
        x = F.interpolate(x, scale_factor=(1.5, 0.5))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("how", ["torchscript", "dynamo"])
def test_an_exported_torch_module_imports_with_the_same_logits(how, tmp_path):
    """Resize from the TorchScript exporter (opset 13: its sizes Shape -> Slice -> Concat, folded by the importer)
    and from the default one (constants)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    if how == "dynamo":
        pytest.importorskip("onnxscript")
    original = Small().eval()
    x = torch.randn(1, 3, 8, 8)
    torch.onnx.export(original, (x,), str(tmp_path / "m.onnx"), input_names=["image"], output_names=["logits"],
                      **({"dynamo": False, "opset_version": 13} if how == "torchscript" else {"dynamo": True}))
    resizes = [n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "Resize"]
    assert len(resizes) == 4
    imported, rebuilt = _onnx_import(tmp_path, tmp_path / "m.onnx")
    layers = [{k: v for k, v in lay.spec.model_dump().items() if k in ("scale", "size", "mode", "align_corners")}
              for lay in imported.layers if lay.op == "interpolate"]
    assert layers == [{"scale": 2, "size": None, "mode": "nearest", "align_corners": False},
                      {"scale": 2, "size": None, "mode": "bilinear", "align_corners": False},
                      {"scale": None, "size": [10, 12], "mode": "bilinear", "align_corners": True},
                      {"scale": [1.5, 0.5], "size": None, "mode": "nearest", "align_corners": False}]
    rebuilt.load_state_dict(original.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=1e-6)


def test_archcs_onnx_export_imports_with_the_same_logits(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from archcompiler.backends.torch.export import export

    spec = archcompiler.load_spec(SPEC)
    original = archcompiler.build(spec, seed=0).eval()
    export(original, spec, "onnx", tmp_path / "up.onnx")
    imported, rebuilt = _onnx_import(tmp_path, tmp_path / "up.onnx")
    rows = {r["name"]: r["output"] for r in archcompiler.analyze(imported)["rows"]}
    assert [rows[lay.name] for lay in imported.layers if lay.op == "interpolate"] == list(SIZES.values())
    x = torch.randn(1, 3, 10, 10)
    (y,) = onnxruntime.InferenceSession(str(tmp_path / "up.onnx")).run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(rebuilt(x), torch.from_numpy(y), rtol=1e-5, atol=1e-5)


def _graph(tmp_path, node_type, attrs, inputs, opset=13):
    """One node over a 1 x 4 x 3 x 3 image, its other inputs constants (name -> array, or None: no input); the
    output declared as the sizes, or the scales times the input."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scales, sizes = inputs.get("scales"), inputs.get("sizes")
    out = list(sizes) if sizes is not None else [int(d * f) for d, f in zip((1, 4, 3, 3), scales)]

    names = ["image"] + [("" if v is None else k) for k, v in inputs.items()]
    consts = [numpy_helper.from_array(np.asarray(v), k) for k, v in inputs.items() if v is not None]
    value = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4, 3, 3]),
             helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(out))]
    graph = helper.make_graph([helper.make_node(node_type, names, ["logits"], **attrs)], "g", value[:1], value[1:],
                              consts)
    path = tmp_path / f"{node_type.lower()}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _floats(*v):
    import numpy as np

    return np.array(v, np.float32)


@pytest.mark.parametrize("node, attrs, inputs, read", [
    ("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     {"roi": None, "scales": _floats(1, 1, 2, 2)}, "op: interpolate, scale: 2}"),
    ("Resize", {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
     {"roi": None, "scales": None, "sizes": [1, 4, 6, 6]}, "size: 6, mode: bilinear}"),
    ("Resize", {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
     {"roi": _floats(), "scales": _floats(), "sizes": [1, 4, 6, 6]}, "size: 6, mode: bilinear, align_corners: true}"),
    ("Upsample", {"mode": "nearest"}, {"scales": _floats(1, 1, 2, 2)}, "op: interpolate, scale: 2}"),
])
def test_resize_and_upsample_nodes_are_read(node, attrs, inputs, read, tmp_path):
    pytest.importorskip("onnx")
    from archcompiler.importers.onnx import import_onnx

    path = _graph(tmp_path, node, attrs, inputs, opset=9 if node == "Upsample" else 13)
    assert read in import_onnx(path, None)


@pytest.mark.parametrize("node, attrs, inputs, said", [
    ("Resize", {"mode": "cubic"}, {"roi": None, "scales": _floats(1, 1, 2, 2)}, "mode 'cubic'"),
    ("Resize", {"mode": "nearest"}, {"roi": None, "scales": _floats(1, 1, 2, 2)},
     "coordinate_transformation_mode 'half_pixel' and nearest_mode 'round_prefer_floor'"),
    ("Resize", {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
     {"roi": None, "scales": _floats(1, 1, 2, 2)}, "linear resizing with coordinate_transformation_mode 'asymmetric'"),
    ("Resize", {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
     {"roi": _floats(0, 0, 0, 0, 1, 1, 1, 1), "scales": _floats(1, 1, 2, 2)}, "'tf_crop_and_resize'"),
    ("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     {"roi": None, "scales": _floats(1, 2, 2, 2)}, "that resize the batch or channels"),
    ("Resize", {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
     {"roi": None, "scales": _floats(1, 1, 2, 2), "sizes": [1, 4, 6, 6]}, "both scales and sizes"),
    ("Upsample", {"mode": "linear"}, {"scales": _floats(1, 1, 2, 2)}, "Upsample's linear places pixels"),
])
def test_what_archc_does_not_compute_is_refused_by_node_saying_why(node, attrs, inputs, said, tmp_path):
    pytest.importorskip("onnx")
    from archcompiler.errors import BackendError
    from archcompiler.importers.onnx import import_onnx

    path = _graph(tmp_path, node, attrs, inputs, opset=9 if node == "Upsample" else 13)
    with pytest.raises(BackendError) as info:
        import_onnx(path, None)
    assert f"({node})" in str(info.value) and said in str(info.value), str(info.value)


# ----------------------------------------------------------------------------- size_of: another layer's size
# A segmentation head's resizing (torchvision's FCN, DeepLabv3, LR-ASPP): a stride-4 convolution's scores back to
# the input's size, a pooled branch back to the map it pooled (DeepLabv3's image pooling) and one map to another's
LIKE = ("name: like\ninput: [3, 18, 22]\nlayers:\n"
        "  - {name: c1, op: conv, out: 8, kernel: 3, stride: 4, padding: 1}\n"
        "  - {name: pool, op: global_avg_pool}\n"
        "  - {name: pool_up, op: interpolate, size_of: c1, mode: bilinear}\n"
        "  - {name: up, op: interpolate, input: c1, size_of: input, mode: bilinear}\n"
        "  - {name: c2, op: conv, out: 8, kernel: 1, input: pool_up}\n"
        "  - {name: up2, op: interpolate, size_of: up}\n"
        "  - {name: s, op: add, inputs: [up, up2]}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def _like_reference(m, x):
    """The network as torchvision writes it: F.interpolate(y, size=x.shape[-2:])."""
    c1 = m.c1(x)
    pool_up = F.interpolate(F.adaptive_avg_pool2d(c1, 1), size=c1.shape[-2:], mode="bilinear", align_corners=False)
    up = F.interpolate(c1, size=x.shape[-2:], mode="bilinear", align_corners=False)
    up2 = F.interpolate(m.c2(pool_up), size=up.shape[-2:])
    return m.fc(torch.flatten(F.adaptive_avg_pool2d(up + up2, 1), 1))


def test_size_of_takes_another_layers_height_and_width():
    """The output is the named layer's height and width (the network's input's with `size_of: input`), the channels
    the input's; FLOPs as FlopCounterMode counts them (none for the resizing); the code reads the other tensor's
    shape, as torchvision does, so the values are F.interpolate's."""
    import inspect

    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(LIKE)
    rows = {r["name"]: r for r in report["rows"]}
    assert {k: rows[k]["output"] for k in ("c1", "pool_up", "up", "up2")} == \
        {"c1": [8, 5, 6], "pool_up": [8, 5, 6], "up": [8, 18, 22], "up2": [8, 18, 22]}
    assert rows["up"]["elementwise"] == 7 * 8 * 18 * 22 and rows["up2"]["elementwise"] == 0
    model = archcompiler.build(LIKE, seed=0).eval()
    x = torch.randn(2, 3, 18, 22, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert counter.get_total_flops() == 2 * report["total"]["flops"]
    with torch.no_grad():
        torch.testing.assert_close(y, _like_reference(model, x), rtol=0, atol=0)
        assert torch.equal(torch.jit.script(model)(x), y)             # TorchScript reads it too
    source = inspect.getsource(type(model).forward)
    assert "size=x.shape[-2:], mode='bilinear', align_corners=False)" in source


def test_size_of_reads_no_pixel_of_the_layer_it_names():
    """The named layer gives the size alone: the receptive field is the resized map's (the stride-4 scores
    upsampled: 3 + 4, as with scale 4), and the memory figures equal a measurement."""
    rows = {r["name"]: r["receptive_field"] for r in archcompiler.analyze(LIKE)["rows"]}
    scaled = LIKE.replace("input: c1, size_of: input,", "input: c1, scale: [3.6, 3.667],")
    assert rows["up"] == [7, 7] == {r["name"]: r["receptive_field"] for r in archcompiler.analyze(scaled)["rows"]}["up"]
    assert_memory_measured(LIKE.replace("op: global_avg_pool}\n  - {name: fc", "op: flatten}\n  - {name: fc"))


def test_size_of_errors_are_located():
    cases = [  # (change, what the message says, line)
        ("size_of: up}", "size_of: up, scale: 2}", "give one of 'scale'", 9),
        ("size_of: up}", "size_of: upp}", "reference to undefined layer 'upp'", 9),
    ]
    for old, new, said, line in cases:
        with pytest.raises((GraphError, SpecError)) as info:
            archcompiler.analyze(LIKE.replace(old, new))
        problem = info.value.errors[0]
        assert said in problem.message and problem.line == line, (new, problem.message, problem.line)
    from archcompiler.ops import KINDS, ShapeError

    attrs = {"size": None, "scale": None, "mode": "nearest", "align_corners": False, "size_of": "flat"}
    with pytest.raises(ShapeError, match="no height and width"):
        KINDS["interpolate"].shape(attrs, [(8, 5, 6), (10,)])
