"""archc import of ONNX files from the exporters people use (issue #32): torch's classic TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``, at opset 13 and 17: most ONNX files in the wild) and its dynamo
exporter, of small networks with the constructs of torchvision's models, as built (fresh weights: zero
biases and equal BatchNorm tensors, which the exporters fold and share through Identity) and with
trained-like weights (every parameter and BatchNorm statistic perturbed).

What the exporters write for them: Identity of an initializer (an equal one shared), Constant nodes,
Shape -> Gather -> Unsqueeze -> Concat -> Reshape on static sizes (a flatten, a channel shuffle's views),
Slice by sizes read from the shape (x.chunk(2, 1)), ReduceMean over [2, 3] without keepdims (x.mean([2, 3])),
a single-input Concat (torch.cat([x], 1)), LayerNorm and the exact GELU in their own steps (before opsets 17
and 20), nn.MultiheadAttention with its sizes read from the shape. Each file is imported through the CLI in
a fresh process; the spec is built with the weights it wrote and its output compared with onnxruntime's
(within 1e-4 of the largest). The full torchvision sweep is benchmarks/onnx_exporters.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import run_archc, trained_like

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")
from onnx import numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

import archcompiler  # noqa: E402

TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- networks with torchvision's constructs

class Residual(nn.Module):
    """ResNet's basic block: conv-BN-ReLU, conv-BN, a 1x1 strided downsample with BN, the sum, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-and-excitation: adaptive average pool, 1x1 conv, ReLU, 1x1 conv, Hardsigmoid, times."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class Inverted(nn.Module):
    """MobileNetV2's inverted residual: 1x1 expansion, depthwise 3x3, SE, 1x1 projection (BN each), the sum."""

    def __init__(self, c: int):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(4 * c, 4 * c, 3, 1, 1, groups=4 * c, bias=False),
                                       nn.BatchNorm2d(4 * c), nn.Hardswish())
        self.se = SqueezeExcite(4 * c, c)
        self.project = nn.Sequential(nn.Conv2d(4 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.se(self.depthwise(self.expand(x))))


def shuffle(x, groups: int):
    """torchvision's channel_shuffle, its sizes read from x.size()."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)


class Shuffle(nn.Module):
    """ShuffleNetV2's unit of stride 1: x.chunk(2, 1), one half through 1x1, depthwise 3x3, 1x1, concatenated
    with the other half, the channels shuffled."""

    def __init__(self, c: int):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat((a, self.branch(b)), 1), 2)


class ConvNet(nn.Module):
    """A stem, a residual block, an inverted residual with SE, a ShuffleNet unit, a dense-style torch.cat([x], 1),
    a global pool and a head; ``head``: how the pool is flattened (torchvision's three ways)."""

    def __init__(self, head: str = "view"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.res = Residual(8, 16, 2)
        self.inverted = Inverted(16)
        self.shuffle = Shuffle(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(16, 10)
        self.head = head

    def forward(self, x):
        x = self.shuffle(self.inverted(self.res(self.stem(x))))
        x = torch.cat([x], 1)
        if self.head == "mean":                 # shufflenet: x.mean([2, 3])
            x = x.mean([2, 3])
        elif self.head == "view":               # googlenet, squeezenet's: a view on the batch size read from x
            x = self.pool(x)
            x = x.view(x.size(0), -1)
        else:                                   # resnet's torch.flatten(x, 1)
            x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's: a LayerNorm over the channels of a channels-last view."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise 7x7, channels-last LayerNorm, Linear 4C, GELU, Linear C, layer scale, the sum."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.full((c, 1, 1), 1e-6))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6))
        self.block = ConvNeXtBlock(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = LayerNorm2d(16, eps=1e-6)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.norm(self.pool(self.block(self.stem(x)))), 1))


class EncoderBlock(nn.Module):
    """ViT's encoder block: LayerNorm, nn.MultiheadAttention (batch_first), the sum, LayerNorm, MLP (GELU), the sum."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(0.0), nn.Linear(2 * d, d))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """torchvision's VisionTransformer, small: patches of 8 (a conv of stride 8, reshaped on sizes read from x),
    the class token expanded to the batch read from x, the position embedding, two encoder blocks, x[:, 0]."""

    def __init__(self, d: int = 32, heads: int = 4, image: int = 32, patch: int = 8):
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, d, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.empty(1, (image // patch) ** 2 + 1, d).normal_(std=0.02))
        self.layers = nn.Sequential(EncoderBlock(d, heads), EncoderBlock(d, heads))
        self.ln = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        n, _, h, w = x.shape
        x = self.conv_proj(x).reshape(n, -1, (h // self.patch) * (w // self.patch)).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.layers(x))[:, 0])


# ----------------------------------------------------------------------------- export, import, compare

EXPORTERS = {"classic13": {"dynamo": False, "opset_version": 13}, "classic14": {"dynamo": False, "opset_version": 14},
             "classic17": {"dynamo": False, "opset_version": 17}, "dynamo": {"dynamo": True}}


def export(model, x, path: Path, exporter: str) -> None:
    kwargs = EXPORTERS[exporter]
    if exporter == "dynamo":      # (onnxscript is in the dev extras; without it torch's default exporter cannot run)
        pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"], **kwargs)


def round_trip(model, shape, exporter: str, weights: str, folder: Path) -> tuple[float, float, Path]:
    """Export ``model`` (fresh or trained-like), ``archc import`` it in a fresh process, build the spec with the
    weights written and run it and onnxruntime on one seeded input: (largest difference, largest output, spec)."""
    torch.manual_seed(0)
    model = (trained_like(model) if weights == "trained" else model).eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    path = folder / f"{exporter}-{weights}.onnx"
    export(model, x, path, exporter)
    out = folder / f"{exporter}-{weights}.yaml"
    done = run_archc("import", str(path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    spec = archcompiler.load_spec(out)
    net = archcompiler.build(spec, weights=str(out.with_suffix(".safetensors"))).eval()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        got = net(x).numpy()
    assert got.shape == want.shape
    return float(np.abs(got - want).max()), float(np.abs(want).max()), out


def ops_of(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("weights", ["fresh", "trained"])
@pytest.mark.parametrize("exporter", ["classic13", "classic17"])
def test_the_classic_exporter_of_torchvisions_constructs_imports_exactly(exporter, weights, tmp_path):
    """Residual blocks with BN (folded into the convs; equal fresh biases shared through Identity), a depthwise
    inverted residual with SE, a ShuffleNet unit (x.chunk(2, 1): Slices by sizes read from Shape; the shuffle's
    views), torch.cat([x], 1), a global pool flattened by a view on the batch size read from x."""
    diff, largest, spec = round_trip(ConvNet("view"), (3, 32, 32), exporter, weights, tmp_path)
    assert diff <= TOLERANCE * largest, (diff, largest)
    written = ops_of(tmp_path / f"{exporter}-{weights}.onnx")
    assert {"Shape", "Gather", "Slice"} <= written           # the sizes read from the shape, computed here
    assert ("Identity" in written) == (weights == "fresh")    # equal initializers shared
    text = spec.read_text()
    assert "channel_shuffle" in text and "flatten" in text


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["fresh", "trained"])
@pytest.mark.parametrize("exporter", ["classic13", "classic17", "dynamo"])
@pytest.mark.parametrize("head", ["view", "mean", "flatten"])
def test_every_head_from_every_exporter_imports_exactly(head, exporter, weights, tmp_path):
    """The three ways torchvision flattens its pool (a view on x.size(0), x.mean([2, 3]): ReduceMean without
    keepdims, a global average pool then a flatten; torch.flatten), from each exporter and both weights."""
    diff, largest, _ = round_trip(ConvNet(head), (3, 32, 32), exporter, weights, tmp_path)
    assert diff <= TOLERANCE * largest, (diff, largest)


def test_the_dynamo_exporter_of_x_mean_imports_as_a_pool_and_a_flatten(tmp_path):
    """x.mean([2, 3]) as the dynamo exporter writes it (ReduceMean over [2, 3], keepdims 0: once refused as "a
    mean over other axes"): a global_avg_pool and a flatten."""
    diff, largest, spec = round_trip(ConvNet("mean"), (3, 32, 32), "dynamo", "trained", tmp_path)
    assert diff <= TOLERANCE * largest, (diff, largest)
    layers = archcompiler.load_spec(spec).layers
    ops = [lay.op for lay in layers]
    assert ops[-3:] == ["global_avg_pool", "flatten", "linear"]


@pytest.mark.parametrize("exporter", ["classic13", "classic17"])
def test_convnexts_layer_norm_and_gelu_in_their_own_steps_import_exactly(exporter, tmp_path):
    """The classic exporter writes the exact GELU as Div, Erf, Add, Mul, Mul (every opset before 20) and, at
    opset 13, LayerNorm as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add: each read back as one
    layer (gelu; layer_norm over the channels-last view)."""
    diff, largest, spec = round_trip(ConvNeXt(), (3, 32, 32), exporter, "trained", tmp_path)
    assert diff <= TOLERANCE * largest, (diff, largest)
    written = ops_of(tmp_path / f"{exporter}-trained.onnx")
    assert "Erf" in written and ("LayerNormalization" in written) == (exporter == "classic17")
    layers = archcompiler.load_spec(spec).layers
    assert [lay.op for lay in layers].count("layer_norm") == 3
    assert [lay.name for lay in layers if getattr(lay.spec, "act", None) == "gelu"] == ["block.fc1"]


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["fresh", "trained"])
@pytest.mark.parametrize("exporter", ["classic14", "classic17", "dynamo"])
def test_a_vision_transformer_from_every_exporter_imports_exactly(exporter, weights, tmp_path):
    """ViT's tokens (the patch conv reshaped on sizes read from x, the class token expanded to the batch read
    from x: Shape, ConstantOfShape, Equal, Where, Expand), nn.MultiheadAttention (its sizes read from the shape;
    the scale as Sqrt of a Cast of a size; a zero bias the exporter drops), x[:, 0]."""
    diff, largest, spec = round_trip(ViT(), (3, 32, 32), exporter, weights, tmp_path)
    assert diff <= TOLERANCE * largest, (diff, largest)
    ops = [lay.op for lay in archcompiler.load_spec(spec).layers]
    assert ops.count("self_attention") == 2


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["fresh", "trained"])
@pytest.mark.parametrize("exporter", ["classic13", "classic17", "dynamo"])
def test_archcs_resnet18_from_every_exporter_imports_exactly(exporter, weights, tmp_path):
    """archc's own resnet18 (at 3 x 64 x 64), as built and trained-like, from each exporter."""
    spec = archcompiler.load_spec("resnet18", ["input=[3,64,64]"])
    model = archcompiler.build(spec, seed=0)
    diff, largest, _ = round_trip(model, (3, 64, 64), exporter, weights, tmp_path)
    assert diff <= TOLERANCE * largest, (diff, largest)


# ----------------------------------------------------------------------------- what is not read exactly is refused

def _one_node_model(tmp_path: Path, node, inits, out_shape) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    conv_w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "conv.weight")
    nodes = [helper.make_node("Conv", ["image", "conv.weight"], ["c"], name="conv", kernel_shape=[1, 1]), node]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [conv_w, *[numpy_helper.from_array(v, k) for k, v in inits.items()]])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("case", ["slice-height", "slice-step", "mean-batch", "concat-constant"])
def test_what_does_not_read_exactly_is_refused_by_node_in_one_line(case, tmp_path):
    """A Slice along the height or with a step, a mean over the batch, a constant concatenated to a map:
    refused naming the node, one line, no traceback, no file written."""
    from onnx import helper

    i64 = np.int64
    node, inits, shape = {
        "slice-height": (helper.make_node("Slice", ["c", "s", "e", "a"], ["y"], name="cut"),
                         {"s": np.array([1], i64), "e": np.array([3], i64), "a": np.array([2], i64)}, [1, 4, 2, 4]),
        "slice-step": (helper.make_node("Slice", ["c", "s", "e", "a", "st"], ["y"], name="cut"),
                       {"s": np.array([0], i64), "e": np.array([4], i64), "a": np.array([1], i64),
                        "st": np.array([2], i64)}, [1, 2, 4, 4]),
        "mean-batch": (helper.make_node("ReduceMean", ["c", "ax"], ["y"], name="cut", keepdims=1),
                       {"ax": np.array([0], i64)}, [1, 4, 4, 4]),
        "concat-constant": (helper.make_node("Concat", ["c", "k"], ["y"], name="cut", axis=1),
                            {"k": np.ones((1, 2, 4, 4), np.float32)}, [1, 6, 4, 4]),
    }[case]
    path = _one_node_model(tmp_path, node, inits, shape)
    done = run_archc("import", str(path), "-o", str(tmp_path / "m.yaml"))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "node cut (" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "m.yaml").exists() and not (tmp_path / "m.safetensors").exists()


def test_a_file_with_a_dynamic_batch_is_read_at_batch_one(tmp_path):
    """A file exported with a dynamic batch (dynamic_axes, as Keras exports 'batch'): each sample is computed
    alone, so the batch is read as 1 and the sizes its Shape nodes read become fixed; the spec computes what
    onnxruntime computes for a batch of two."""
    model = ConvNet("view").eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), input_names=["image"],
                          output_names=["logits"], dynamo=False, opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    done = run_archc("import", str(path), "-o", str(tmp_path / "m.yaml"))
    assert done.returncode == 0, done.stderr
    built = archcompiler.build(str(tmp_path / "m.yaml"), weights=str(tmp_path / "m.safetensors")).eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    want = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        got = built(torch.from_numpy(x)).numpy()
    assert np.abs(want - got).max() <= 1e-4 * np.abs(want).max()


FOLDS = {   # op, attributes, inputs: what the exporters compute on sizes and constants, folded as onnxruntime computes it
    "gather-negative": ("Gather", {"axis": 0}, [np.array([1, 8, 28, 28]), np.array(-3)]),
    "gather-2d": ("Gather", {"axis": 1}, [np.arange(12.0, dtype=np.float32).reshape(3, 4), np.array([[3, 0], [1, 1]])]),
    "unsqueeze": ("Unsqueeze", {}, [np.array(7), np.array([0])]),
    "squeeze-all": ("Squeeze", {}, [np.ones((1, 3, 1), np.float32)]),
    "concat": ("Concat", {"axis": 0}, [np.array([1]), np.array([-1]), np.array([4, 4])]),
    "slice-clamped": ("Slice", {}, [np.arange(10), np.array([-100]), np.array([2 ** 62]), np.array([0]), np.array([3])]),
    "slice-backwards": ("Slice", {}, [np.arange(10), np.array([-2]), np.array([-2 ** 62]), np.array([0]), np.array([-3])]),
    "slice-2d": ("Slice", {}, [np.arange(20).reshape(4, 5), np.array([1, -4]), np.array([3, 100]), np.array([0, 1])]),
    "reshape-zero-and-minus-one": ("Reshape", {}, [np.arange(24.0, dtype=np.float32).reshape(2, 3, 4),
                                                   np.array([0, -1])]),
    "div-truncates": ("Div", {}, [np.array([-7, 7, -7, 7]), np.array([2, 2, -2, -2])]),
    "mod-divisor-sign": ("Mod", {}, [np.array([-7, 7, -7, 7]), np.array([2, 2, -2, -2])]),
    "fmod": ("Mod", {"fmod": 1}, [np.array([-7.5, 7.5], np.float32), np.array([2.0, -2.0], np.float32)]),
    "sqrt-of-a-cast": ("Sqrt", {}, [np.array([64.0], np.float32)]),
    "cast-truncates": ("Cast", {"to": 7}, [np.array([-2.7, 2.7], np.float32)]),
    "where-equal": ("Where", {}, [np.array([True, False, True]), np.array([1, 1, 1]), np.array([1, -1, -1])]),
    "expand": ("Expand", {}, [np.arange(3.0, dtype=np.float32).reshape(1, 1, 3), np.array([2, 1, 1])]),
    "shape-start-end": ("Shape", {"start": 1, "end": -1}, [np.zeros((1, 8, 4, 5), np.float32)]),
    "constant-of-shape": ("ConstantOfShape", {"value": numpy_helper.from_array(np.array([-1], np.int64))},
                          [np.array([3])]),
    "transpose": ("Transpose", {"perm": [2, 0, 1]}, [np.arange(6).reshape(1, 2, 3)]),
}


@pytest.mark.parametrize("case", list(FOLDS))
def test_each_folded_op_computes_what_onnxruntime_does(case):
    """The ops archc computes on constants (sizes read from the shape, exporters' arithmetic) give onnxruntime's
    numbers: negative indices, clamped and backward slices, Reshape's 0 and -1, integer division truncated toward
    zero and Mod with the divisor's sign."""
    from onnx import helper

    from archcompiler.importers.onnx.fold import _folded

    op, attrs, values = FOLDS[case]
    names = [f"i{k}" for k in range(len(values))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info("y")],
                              [numpy_helper.from_array(v, n) for n, v in zip(names, values)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (want,) = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {})
    shapes = {names[0]: values[0].shape} if op == "Shape" else {}
    got = _folded(op, attrs, names, {} if shapes else dict(zip(names, values)), shapes)
    assert got is not None
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), (got, want)


def test_an_onnx_import_that_computes_something_else_is_refused_naming_the_first_layer_that_differs(
        tmp_path, monkeypatch):
    """A mapping gone wrong (Relu read as a sigmoid: the same shapes and weights, other values) is never
    written: onnxruntime is asked for the values that hold each layer's output, and the error names the first
    layer, in the order the spec runs, whose output differs (the convolution after the first ReLU)."""
    from archcompiler.errors import BackendError
    from archcompiler.importers.onnx import import_onnx
    from archcompiler.ops import FromOnnx, registry

    model = ConvNet("flatten").eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(trained_like(model), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=17)
    monkeypatch.setitem(registry().from_onnx, "Relu", FromOnnx(lambda n: {"op": "sigmoid"}))
    with pytest.raises(BackendError) as info:
        import_onnx(path, str(tmp_path / "m.yaml"))
    message = info.value.errors[0].format()
    assert "computes something else than the file" in message
    # (the classic exporter folds each BatchNorm into its Conv and names the sum onnx::Conv_N: the layers are
    # conv, conv_1, ... in the file's order; conv_1 is the residual block's first, after the stem's ReLU)
    assert "the first layer whose output differs is conv_1, computed by the file's node " in message, message
    assert not (tmp_path / "m.yaml").exists()
