"""group_norm (Wu & He 2018; torch's nn.GroupNorm), an op added as one module (archcompiler/ops/group_norm.py)
and nothing else in the package (issue #36): against nn.GroupNorm and F.group_norm its shape, parameters,
FLOPs, memory (measured) and logits; the located error for groups that do not divide the channels; the
diagram, the flops table and the schema; and archc import from a torch module and from ONNX (what archc's
own export writes, opset 21's GroupNormalization and the TorchScript exporter's pattern)."""

from __future__ import annotations

import pytest
from conftest import ROOT, assert_memory_measured, randomized, run_archc

import archcompiler
from archcompiler import GraphError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# two group norms (one with an activation, one with its own eps) between convolutions
SPEC = ("name: gn\ninput: [3, 12, 12]\nlayers:\n"
        "  - {name: c1, op: conv, out: 8, kernel: 3, padding: 1}\n"
        "  - {name: gn1, op: group_norm, groups: 4, act: relu}\n"
        "  - {name: c2, op: conv, out: 16, kernel: 3, stride: 2, padding: 1}\n"
        "  - {name: gn2, op: group_norm, groups: 2, eps: 0.001}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def _reference(m, x):
    """The network written by hand with torch's functions and the built module's weights."""
    x = F.relu(F.group_norm(F.conv2d(x, m.c1.weight, m.c1.bias, padding=1), 4, m.gn1.weight, m.gn1.bias, 1e-5))
    x = F.group_norm(F.conv2d(x, m.c2.weight, m.c2.bias, stride=2, padding=1), 2, m.gn2.weight, m.gn2.bias, 1e-3)
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), m.fc.weight, m.fc.bias)


def test_shape_params_and_flops_agree_with_torch():
    """Per group norm 2C parameters (weight, bias) and no buffers, as nn.GroupNorm has; FLOPs as torch counts
    them (FlopCounterMode counts the convolutions and the linear layer, not the norms: archc counts these as
    element operations apart, 5 per element, as it counts layer_norm)."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    model = archcompiler.build(SPEC, seed=0).eval()
    assert isinstance(model.gn1, nn.GroupNorm) and (model.gn1.num_groups, model.gn1.num_channels) == (4, 8)
    assert (model.gn2.num_groups, model.gn2.eps, model.gn2.affine) == (2, 1e-3, True)
    rows = {r["name"]: r for r in report["rows"]}
    assert (rows["gn1"]["output"], rows["gn2"]["output"]) == ([8, 12, 12], [16, 6, 6])
    assert (rows["gn1"]["params"], rows["gn2"]["params"]) == (2 * 8, 2 * 16)
    assert rows["gn1"]["buffers"] == rows["gn2"]["buffers"] == 0
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    assert not list(model.buffers())
    reference = nn.Sequential(model.c1, nn.GroupNorm(4, 8), nn.ReLU(), model.c2, nn.GroupNorm(2, 16, eps=1e-3),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc).eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        for net in (model, reference):
            with FlopCounterMode(display=False) as counter:
                y = net(x)
            assert tuple(y.shape) == (2, 2)
            assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
    # its own element operations: 5 per element (statistics, normalisation, the affine map); the ReLU apart
    assert report["by_op"]["group_norm"]["elementwise"] == 2 * 5 * (8 * 12 * 12 + 16 * 6 * 6)
    assert report["by_op"]["group_norm"]["macs"] == 0
    assert "5 per element" in (ROOT / "archcompiler" / "ops" / "group_norm.py").read_text()


def test_logits_equal_a_hand_written_reference():
    model = randomized(archcompiler.build(SPEC, seed=0)).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), _reference(model, x))
    model.train()                       # no running statistics: training computes the same
    with torch.no_grad():
        assert torch.equal(model(x), _reference(model, x))


def test_groups_that_do_not_divide_the_channels_are_refused_at_the_layer_naming_both():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("groups: 2", "groups: 3"))
    (problem,) = info.value.errors
    assert "groups=3" in problem.message and "16 channels" in problem.message
    assert problem.line == 7          # the layer gn2
    with pytest.raises(GraphError) as info:        # a flat input: an image it needs
        archcompiler.analyze(SPEC.replace("{name: fc, op: linear, out: 2}", "{name: fc, op: linear, out: 4}\n"
                                          "  - {name: gn3, op: group_norm, groups: 2}"))
    assert "image" in info.value.errors[0].message and info.value.errors[0].line == 10


# a network whose inference peak the group norm's mean and 1 / std (2 x groups floats a sample) decide: 16
# groups of 16 channels (32 floats), then a pool whose output is smaller (16). (It reads a convolution: a norm
# that reads the network's input directly is predicted a training peak of about one input too many, batch_norm
# and layer_norm alike.)
MEMORY = ("name: gnm\ninput: [4, 6, 6]\nlayers:\n"
          "  - {name: c, op: conv, out: 16, kernel: 1}\n"
          "  - {name: gn0, op: group_norm, groups: 16}\n"
          "  - {name: p, op: global_avg_pool}\n"
          "  - {name: fc, op: linear, out: 2}\n")


@pytest.mark.parametrize("text", [MEMORY, SPEC, SPEC.replace("act: relu", "act: silu")],
                         ids=["binding", "convs", "silu"])
def test_memory_matches_a_measurement(text):
    """Inference peak exactly, a training step within 1% (autograd keeps the input and the mean and 1 / std
    per sample and group, F.group_norm's)."""
    assert_memory_measured(text)


def test_the_workspace_is_the_mean_and_deviation_of_each_group():
    """The inference peak is at the group norm, where its mean and 1 / std (2 x groups floats a sample) are
    alive beside its input and output: 16 groups against one add 2 x 15 floats a sample, as measured."""
    from archcompiler.measure.memory import measure_peak_activation_bytes

    peaks = []
    for groups in (1, 16):
        text = MEMORY.replace("groups: 16", f"groups: {groups}")
        predicted = archcompiler.analyze(text, batch=3)["peak_activation_bytes"]
        assert predicted == measure_peak_activation_bytes(archcompiler.build(text, seed=0), torch.randn(3, 4, 6, 6))
        peaks.append(predicted)
    assert peaks[1] - peaks[0] == 3 * 2 * (16 - 1) * 4


def test_it_is_drawn_listed_timed_and_in_the_schema(capsys, tmp_path):
    from archcompiler.backends.dot import build_dot
    from archcompiler.cli import main
    from archcompiler.ops import KINDS
    from archcompiler.spec.schema import schema_text

    pytest.importorskip("graphviz")
    dot = build_dot(archcompiler.load_spec(SPEC)).source
    assert "gn1\\ngroup norm groups 4 + ReLU" in dot and "gn2\\ngroup norm groups 2" in dot
    (tmp_path / "gn.yaml").write_text(SPEC)
    assert main(["draw", str(tmp_path / "gn.yaml"), "--format", "dot", "-o", str(tmp_path / "gn.dot")]) == 0
    assert "group norm groups 4" in (tmp_path / "gn.dot").read_text()
    capsys.readouterr()
    assert main(["flops", str(tmp_path / "gn.yaml")]) == 0
    table = capsys.readouterr().out
    assert any(line.split()[:2] == ["gn1", "group_norm"] and line.split()[-1] == "16" for line in table.splitlines())
    assert '"const": "group_norm"' in schema_text()
    kernel = KINDS["group_norm"].latency.kernel({"groups": 4, "eps": 1e-5}, [(8, 12, 12)], (8, 12, 12))
    assert kernel.kind == "batch_norm" and kernel.work == 8 * 12 * 12


# ----------------------------------------------------------------------------- archc import from torch


class Net(nn.Module):
    """A torch network with nn.GroupNorm after each convolution (one followed by a ReLU)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8, eps=1e-3)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(8, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        x = self.norm2(self.down(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_import_from_torch_gives_the_same_logits():
    original = randomized(Net()).eval()
    text = archcompiler.import_module(original, input=(3, 12, 12))
    assert "{name: norm, op: group_norm, groups: 4, eps: 0.001, act: relu}" in text
    assert "{name: norm2, op: group_norm, groups: 8}" in text
    rebuilt = archcompiler.build(text).eval()
    rebuilt.load_state_dict(original.state_dict())          # strict: the same keys
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


def test_import_refuses_a_group_norm_without_its_affine_parameters():
    from archcompiler.errors import BackendError

    model = Net()
    model.norm = nn.GroupNorm(4, 8, affine=False)
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model, input=(3, 12, 12))
    assert "norm (GroupNorm)" in str(info.value) and "affine=False" in str(info.value)


def test_archc_import_of_a_torch_module_in_a_fresh_process(tmp_path):
    source = (ROOT / "tests" / "test_group_norm.py").read_text()
    net = source[source.index("class Net(nn.Module):"):source.index("def test_import_from_torch")]
    (tmp_path / "gnnet.py").write_text("import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n\n\n"
                                       + net)
    done = run_archc("import", "gnnet.py:Net", "--input", "3x12x12", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spec = archcompiler.load_spec(tmp_path / "net.yaml")
    assert archcompiler.analyze(spec)["by_op"]["group_norm"]["count"] == 2
    original = randomized(Net()).eval()
    rebuilt = archcompiler.build(spec).eval()
    rebuilt.load_state_dict(original.state_dict())
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), original(x))


# ----------------------------------------------------------------------------- archc import from ONNX


def _onnx_import(tmp_path, path):
    """``archc import PATH``, then the spec built with the weights it wrote beside it."""
    from archcompiler.cli import main

    out = tmp_path / (path.stem + ".yaml")
    assert main(["import", str(path), "-o", str(out)]) == 0
    spec = archcompiler.load_spec(out)
    return spec, archcompiler.build(spec, weights=str(out.with_suffix(".safetensors"))).eval()


def test_archcs_onnx_export_imports_with_the_same_logits(tmp_path):
    """archc build --emit onnx writes nn.GroupNorm (torch's exporter at its default opset, 20) as Reshape to
    N x G x -1, InstanceNormalization (scale 1, bias 0), Reshape back, Mul by the C x 1 x 1 weight, Add of the
    bias; archc import reads that back as group_norm, the activation after it included."""
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from archcompiler.backends.torch.export import export

    spec = archcompiler.load_spec(SPEC)
    original = randomized(archcompiler.build(spec, seed=0)).eval()
    export(original, spec, "onnx", tmp_path / "gn.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "gn.onnx")).graph.node]
    assert ops[:6] == ["Conv", "Reshape", "InstanceNormalization", "Reshape", "Mul", "Add"]
    imported, rebuilt = _onnx_import(tmp_path, tmp_path / "gn.onnx")
    layers = [(lay.op, lay.spec.groups, lay.spec.eps, lay.spec.act) for lay in imported.layers
              if lay.op == "group_norm"]
    assert layers == [("group_norm", 4, 1e-5, "relu"), ("group_norm", 2, 1e-3, "none")]
    assert archcompiler.analyze(imported)["total"]["params"] == archcompiler.analyze(spec)["total"]["params"]
    x = torch.randn(1, 3, 12, 12)
    session = onnxruntime.InferenceSession(str(tmp_path / "gn.onnx"))
    (y,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(rebuilt(x), torch.from_numpy(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["opset21", "torchscript"])
def test_the_other_onnx_forms_import_with_the_same_logits(how, tmp_path):
    """Opset 21's GroupNormalization (a per-channel scale and bias), and the TorchScript exporter's pattern
    (its Reshape back reads Shape(input); Constant nodes between the steps). The TorchScript form's output shape
    is unknown to ONNX's shape inference (it does not propagate Shape's value), so the network here has no layer
    after the group norm that needs it."""
    pytest.importorskip("onnx")
    if how == "opset21":
        pytest.importorskip("onnxscript")
        text, kwargs = SPEC, {"dynamo": True, "opset_version": 21}
    else:
        text = SPEC.replace("  - {name: c2, op: conv, out: 16, kernel: 3, stride: 2, padding: 1}\n", "") \
                   .replace("  - {name: gn2, op: group_norm, groups: 2, eps: 0.001}\n", "")
        kwargs = {"dynamo": False, "opset_version": 17}
    spec = archcompiler.load_spec(text)
    original = randomized(archcompiler.build(spec, seed=0)).eval()
    x = torch.randn(1, 3, 12, 12)
    torch.onnx.export(original, (x,), str(tmp_path / "m.onnx"), input_names=["image"], output_names=["logits"],
                      **kwargs)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert ("GroupNormalization" in ops) == (how == "opset21") and ("Shape" in ops) == (how == "torchscript")
    imported, rebuilt = _onnx_import(tmp_path, tmp_path / "m.onnx")
    assert [lay.spec.groups for lay in imported.layers if lay.op == "group_norm"] == [4, 2][:1 + (how == "opset21")]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=1e-6)


def test_an_instance_norm_pattern_with_other_constants_is_refused_saying_why(tmp_path):
    """The pattern with an InstanceNormalization whose scale is not ones is no group norm: refused by node, saying
    why; with ones, it is one."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from archcompiler.errors import BackendError
    from archcompiler.importers.onnx import import_onnx

    def model(scale, path):
        consts = {"to": np.array([0, 2, -1]), "back": np.array([1, 4, 3, 3]), "s": np.array(scale, np.float32),
                  "b": np.zeros(2, np.float32), "w": np.ones((4, 1, 1), np.float32),
                  "bias": np.zeros((4, 1, 1), np.float32)}
        nodes = [helper.make_node("Reshape", ["image", "to"], ["r"]),
                 helper.make_node("InstanceNormalization", ["r", "s", "b"], ["n"], epsilon=1e-5),
                 helper.make_node("Reshape", ["n", "back"], ["u"]),
                 helper.make_node("Mul", ["u", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["logits"])]
        value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 3, 3]) for n in ("image", "logits")]
        graph = helper.make_graph(nodes, "g", value[:1], value[1:],
                                  [numpy_helper.from_array(a, k) for k, a in consts.items()])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    with pytest.raises(BackendError) as info:
        import_onnx(model([1, 2], tmp_path / "x.onnx"), None)
    assert "InstanceNormalization's scale and bias are not 2 ones and zeros" in str(info.value)
    assert "op: group_norm, groups: 2" in import_onnx(model([1, 1], tmp_path / "y.onnx"), None)


@pytest.mark.parametrize("scale, opset", [((4,), 21), ((2,), 18)])
def test_group_normalization_with_a_scale_per_channel_is_read_and_per_group_refused(scale, opset, tmp_path):
    """Opset 21's GroupNormalization scales each channel (group_norm's weight); opset 18's scaled each group,
    which archc reads only where a group is a channel."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from archcompiler.errors import BackendError
    from archcompiler.importers.onnx import import_onnx

    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 3, 3]) for n in ("image", "logits")]
    graph = helper.make_graph([helper.make_node("GroupNormalization", ["image", "s", "b"], ["logits"], num_groups=2,
                                                epsilon=1e-3)], "g", value[:1], value[1:],
                              [numpy_helper.from_array(np.full(scale, 2, np.float32), "s"),
                               numpy_helper.from_array(np.ones(scale, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(tmp_path / "g.onnx"))
    if opset == 18:
        with pytest.raises(BackendError, match="without a scale and bias of the 4 channels"):
            import_onnx(tmp_path / "g.onnx", None)
        return
    assert "op: group_norm, groups: 2, eps: 0.001}" in import_onnx(tmp_path / "g.onnx", None)
