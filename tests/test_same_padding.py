"""TensorFlow's and Keras's padding='same' at any stride (#32): the seed author's Keras GoogLeNet pads a
7x7/2 convolution 2 before and 3 after on a 224 map, and its 3x3/2 pools 0 and 1 on even maps. `padding:
same` on conv, max_pool and avg_pool computes exactly that (checked against a direct implementation of
TensorFlow's rule, window by window), its memory as torch allocates it, and it comes back from timm's
Conv2dSame and from an ONNX file's asymmetric pads."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import assert_memory_measured  # noqa: E402

import archcompiler  # noqa: E402
from archcompiler.ops import same_pads  # noqa: E402

SPEC = """name: same
input: [3, 16, 15]
layers:
  - {name: c1, op: conv, out: 8, kernel: 7, stride: 2, padding: same, norm: batch_norm, act: relu}
  - {name: p1, op: max_pool, kernel: 3, stride: 2, padding: same}
  - {name: c2, op: conv, out: 8, kernel: 3, stride: 2, padding: same}
  - {name: p2, op: avg_pool, kernel: 3, stride: 2, padding: same}
  - {name: p3, op: avg_pool, kernel: 3, stride: 1, padding: same}
  - {name: p4, op: max_pool, kernel: 2, stride: 1, padding: same}
  - {name: g, op: global_avg_pool}
  - {name: fc, op: linear, out: 2}
"""


def tf_pool(x, k: int, s: int, kind: str):
    """TensorFlow's 'same' pooling, window by window: the output ceil(size / s), the odd pad after, only the
    map's own pixels in each window (max of them, or their mean)."""
    n, c, h, w = x.shape
    oh, ow = -(-h // s), -(-w // s)
    t, left = max((oh - 1) * s + k - h, 0) // 2, max((ow - 1) * s + k - w, 0) // 2
    out = torch.empty(n, c, oh, ow)
    for i in range(oh):
        for j in range(ow):
            r, q = i * s - t, j * s - left
            window = x[:, :, max(r, 0):min(r + k, h), max(q, 0):min(q + k, w)]
            out[:, :, i, j] = window.amax((2, 3)) if kind == "max" else window.mean((2, 3))
    return out


def tf_conv(x, conv):
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    (t, b), (left, r) = same_pads(x.shape[2], kh, sh), same_pads(x.shape[3], kw, sw)
    return F.conv2d(F.pad(x, (left, r, t, b)), conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def test_keras_googlenets_pads_are_tensorflows_rule():
    assert same_pads(224, 7, 2) == (2, 3)                      # the 7x7/2 stem
    assert same_pads(112, 3, 2) == (0, 1) and same_pads(56, 3, 2) == (0, 1)   # the 3x3/2 pools
    assert same_pads(15, 3, 1) == (1, 1) and same_pads(15, 2, 1) == (0, 1)


def test_same_at_any_stride_computes_tensorflows_values_and_shapes():
    report = archcompiler.analyze(SPEC)
    assert [r["output"] for r in report["rows"]][:6] == [[8, 8, 8], [8, 4, 4], [8, 2, 2], [8, 1, 1], [8, 1, 1], [8, 1, 1]]
    model = archcompiler.build(SPEC, seed=0).eval()
    x = torch.randn(2, 3, 16, 15, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = F.relu(model.c1.bn(tf_conv(x, model.c1.conv)))
        y = tf_conv(tf_pool(y, 3, 2, "max"), model.c2)
        y = tf_pool(tf_pool(tf_pool(y, 3, 2, "avg"), 3, 1, "avg"), 2, 1, "max")
        assert torch.allclose(model(x), model.fc(y.mean((2, 3))), atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]


def test_a_larger_map_keeps_every_window_of_tensorflow():
    spec = SPEC.replace("[3, 16, 15]", "[3, 40, 37]")
    model = archcompiler.build(spec, seed=1).eval()
    x = torch.randn(1, 3, 40, 37, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = F.relu(model.c1.bn(tf_conv(x, model.c1.conv)))
        y = tf_conv(tf_pool(y, 3, 2, "max"), model.c2)
        y = tf_pool(tf_pool(tf_pool(y, 3, 2, "avg"), 3, 1, "avg"), 2, 1, "max")
        assert torch.allclose(model(x), model.fc(y.mean((2, 3))), atol=1e-5)


def test_same_padding_memory_matches_a_measurement():
    assert_memory_measured(SPEC.replace("[3, 16, 15]", "[3, 32, 30]"))


def test_timms_conv2d_same_imports_as_same():
    from torch import nn

    class Conv2dSame(nn.Conv2d):
        """timm's: TensorFlow's 'same' padding by the input's size, then the convolution."""

        def forward(self, x):
            (t, b), (left, r) = (same_pads(x.shape[2], self.kernel_size[0], self.stride[0]),
                                 same_pads(x.shape[3], self.kernel_size[1], self.stride[1]))
            return F.conv2d(F.pad(x, (left, r, t, b)), self.weight, self.bias, self.stride, 0, self.dilation)

    Conv2dSame.__module__ = "timm.layers.conv2d_same"     # a leaf of the trace, as timm's own class is

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_stem = Conv2dSame(3, 8, 3, stride=2, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.conv_stem(x))).mean((2, 3)))

    text = archcompiler.import_module(Net().eval(), input=(3, 32, 31), name="net")
    assert "padding: same" in text and "stride: 2" in text


def test_an_onnx_conv_with_keras_asymmetric_pads_imports_as_same(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from conftest import run_archc
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 7, 7)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    fc = rng.normal(size=(4, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[7, 7], strides=[2, 2],
                          pads=[2, 2, 3, 3]),
         helper.make_node("GlobalAveragePool", ["c"], ["g"], name="pool"),
         helper.make_node("Flatten", ["g"], ["f"], name="flat", axis=1),
         helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")],
        "keras_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(fc, "fc")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "keras_like.onnx"
    path.write_bytes(model.SerializeToString())
    done = run_archc("import", str(path), "-o", str(tmp_path / "k.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "padding: same" in (tmp_path / "k.yaml").read_text()
    built = archcompiler.build(str(tmp_path / "k.yaml"), weights=str(tmp_path / "k.safetensors")).eval()
    x = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        got = built(torch.from_numpy(x)).numpy()
    assert np.allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_the_first_users_keras_googlenet_is_a_spec_of_fifteen_lines():
    """specs/googlenet-keras.yaml: the paper's spec with Keras's padding='same' at stride 2, no LRN, one 3x3
    stem convolution, no auxiliary heads (their outputs go with them), 10 classes: the parameter count of
    the Keras model, 5,979,642; its values against Keras's (benchmarks/keras_googlenet.py) are in benchmarks/RESULTS.md."""
    from conftest import ROOT

    spec = archcompiler.load_spec(ROOT / "specs" / "googlenet-keras.yaml")
    assert list(spec.outputs) == ["main"]
    report = archcompiler.analyze(spec)
    assert report["total"]["params"] == 5_979_642
    rows = {r["name"]: r["output"] for r in report["rows"]}
    assert rows["conv1"] == [64, 112, 112] and rows["pool1"] == [64, 56, 56] and rows["pool2"] == [192, 28, 28]
    assert rows["pool3"] == [480, 13, 13] and rows["pool4"] == [832, 6, 6]


def test_a_variant_that_deletes_a_head_drops_its_output_and_the_parents_parameter_it_read(tmp_path):
    from conftest import ROOT

    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {ROOT / 'specs' / 'googlenet.yaml'}\nname: c\nedits:\n  - {{delete: aux1}}\n")
    spec = archcompiler.load_spec(child)           # aux_dropout is still read by aux2
    assert list(spec.outputs) == ["main", "aux2"]
    child.write_text(child.read_text() + "  - {delete: aux2}\n")
    assert list(archcompiler.load_spec(child).outputs) == ["main"]     # aux_dropout: the parent's, now unread
    child.write_text(child.read_text() + "params: {my_width: 2}\n")    # a parameter of its own is still checked
    with pytest.raises(archcompiler.SpecError) as info:
        archcompiler.load_spec(child)
    assert "parameter 'my_width' is not used by any layer" in str(info.value)


def test_the_keras_googlenet_goes_through_onnx_and_back(tmp_path):
    """archc's ONNX export of padding same at stride 2 (a Pad before the convolution and the max pools) reads
    back as padding same, and the import computes what onnxruntime computes from the file."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from conftest import ROOT, run_archc

    spec = str(ROOT / "specs" / "googlenet-keras.yaml")
    done = run_archc("build", spec, "--set", "input=[3,64,64]", "--emit", "onnx", "-o", "k.onnx", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_archc("import", "k.onnx", "-o", "k.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "k.yaml").read_text()
    assert text.count("padding: same") == 3, text           # the stem and the two stride-2 pools
    built = archcompiler.build(str(tmp_path / "k.yaml"), weights=str(tmp_path / "k.safetensors")).eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "k.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = built(torch.from_numpy(x)).numpy()
    assert np.abs(want - got).max() <= 1e-4 * np.abs(want).max()
