"""ONNX as Keras 3 exports it (#32): ``model.export(path, format="onnx")`` on the torch backend writes a file
that takes N x H x W x C and transposes it, a Conv without bias followed by the bias added on the
channels-last view, float Casts around every op, 'same' padding of a stride-2 max pool as a Pad that repeats
the edge, Concatenate along the last axis and GlobalAveragePooling2D as a ReduceMean over axes 1 and 2.
The files here are written node by node in that shape (Keras is no dependency); benchmarks/keras_googlenet.py
imports Keras's own export of the seed author's GoogLeNet (RESULTS)."""

from __future__ import annotations

import numpy as np
import pytest

import archcompiler

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from conftest import run_archc  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)


class _File:
    """A graph written as Keras's export writes it: every value goes through Cast to float after each op."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"/{base}_{self.count}"

    def node(self, op: str, ins: list[str], cast: bool = True, **attrs) -> str:
        out = self.name(op) + "_output"
        self.nodes.append(helper.make_node(op, ins, [out], name=self.name(op), **attrs))
        if not cast:
            return out
        casted = self.name("Cast") + "_output"
        self.nodes.append(helper.make_node("Cast", [out], [casted], name=self.name("Cast"), to=TensorProto.FLOAT))
        return casted

    def init(self, value: np.ndarray, base: str) -> str:
        name = f"onnx::{base}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def conv_relu(self, nchw: str, cin: int, cout: int, k: int, pads: list[int]) -> str:
        """A bias-less Conv of the N x C x H x W map, the bias added on its N x H x W x C view, ReLU: the
        channels-last result."""
        w = self.init(RNG.normal(0, 0.3, (cout, cin, k, k)).astype(np.float32), "Conv")
        y = self.node("Conv", [nchw, w], cast=False, kernel_shape=[k, k], pads=pads, strides=[1, 1])
        y = self.node("Transpose", [y], perm=[0, 2, 3, 1])
        b = self.init(RNG.normal(0, 0.3, (1, 1, 1, cout)).astype(np.float32), "Add")
        return self.node("Relu", [self.node("Add", [y, b])])

    def nchw(self, nhwc: str) -> str:
        return self.node("Transpose", [nhwc], cast=False, perm=[0, 3, 1, 2])


def _keras_like(path, edge_before_conv: bool = False) -> None:
    f = _File()
    x = f.nchw(f.node("Cast", ["keras_tensor"], cast=False, to=TensorProto.FLOAT))
    pads = f.init(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "Pad")
    if edge_before_conv:
        x = f.node("Pad", [x, pads], cast=False, mode="edge")
        stem = f.conv_relu(x, 3, 8, 3, [0, 0, 0, 0])
    else:
        stem = f.conv_relu(x, 3, 8, 3, [1, 1, 1, 1])
    # MaxPooling2D(3, strides=2, padding='same') of 16 x 16: 0 before, 1 after, repeating the edge
    edge = f.init(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "Pad")
    pooled = f.node("MaxPool", [f.node("Pad", [f.nchw(stem), edge], cast=False, mode="edge")], cast=False,
                    kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0])
    pooled = f.node("Transpose", [pooled], perm=[0, 2, 3, 1])
    a = f.conv_relu(f.nchw(pooled), 8, 4, 1, [0, 0, 0, 0])
    b = f.conv_relu(f.nchw(pooled), 8, 6, 3, [1, 1, 1, 1])
    joined = f.node("Concat", [a, b], axis=-1)
    axes = f.init(np.array([1, 2], np.int64), "ReduceMean")
    mean = f.node("ReduceMean", [joined, axes], keepdims=0)
    fc = f.init(RNG.normal(0, 0.3, (10, 3)).astype(np.float32), "MatMul")
    logits = f.node("Add", [f.node("MatMul", [mean, fc]), f.init(RNG.normal(0, 0.3, (3,)).astype(np.float32), "Add")])
    f.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="/Softmax", axis=-1))
    graph = helper.make_graph(
        f.nodes, "keras_like", [helper.make_tensor_value_info("keras_tensor", TensorProto.FLOAT, ["batch", 16, 16, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])], f.inits)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())


def test_a_file_written_as_keras_exports_imports_and_computes_what_onnxruntime_does(tmp_path):
    path = tmp_path / "keras_like.onnx"
    _keras_like(path)
    done = run_archc("import", str(path), "-o", "k.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "archc: verified:" in done.stderr, done.stderr
    text = (tmp_path / "k.yaml").read_text()
    assert "N x H x W x C" in text                          # the spec says what its input was
    assert "padding: same" in text                          # the edge-repeating Pad of the stride-2 max pool
    assert "bias: false" not in text                        # each Conv took the Add after it as its bias
    built = archcompiler.build(str(tmp_path / "k.yaml"), weights=str(tmp_path / "k.safetensors")).eval()
    assert sum(p.numel() for p in built.parameters()) == 3 * 9 * 8 + 8 + 8 * 4 + 4 + 8 * 9 * 6 + 6 + 10 * 3 + 3
    x = RNG.normal(size=(2, 16, 16, 3)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"keras_tensor": x})[0]
    with torch.no_grad():
        got = built.predict_proba(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(want - got).max() <= 1e-5


def test_an_edge_pad_before_a_convolution_is_a_pad_layer_not_the_convolutions_padding(tmp_path):
    """Repeating the edge is not the zeros a convolution pads with: the Pad stays a layer of its own
    (`pad`, mode replicate), and the import computes what onnxruntime does."""
    import yaml

    path = tmp_path / "edge.onnx"
    _keras_like(path, edge_before_conv=True)
    done = run_archc("import", str(path), "-o", "k.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "archc: verified:" in done.stderr, done.stderr
    layers = yaml.safe_load((tmp_path / "k.yaml").read_text())["layers"]
    assert layers[0]["op"] == "pad" and layers[0]["mode"] == "replicate", layers[0]
    assert layers[1]["op"] == "conv" and layers[1].get("padding", 0) == 0, layers[1]


def test_a_constant_added_to_a_convolution_read_elsewhere_too_is_not_its_bias(tmp_path):
    """The Add is the Conv's bias only where nothing else reads the Conv's output: here a residual reads it
    too, so the Add is a constant added to a map, which archc has no op for: refused at the Add."""
    w = numpy_helper.from_array(RNG.normal(size=(3, 3, 1, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.normal(size=(1, 3, 1, 1)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1]),
         helper.make_node("Add", ["y", "b"], ["z"], name="plus_bias"),
         helper.make_node("Add", ["z", "y"], ["out"], name="residual")],
        "two_readers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])], [w, b])
    path = tmp_path / "two.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    done = run_archc("import", str(path), "-o", "k.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "plus_bias (Add)" in done.stderr, done.stderr
