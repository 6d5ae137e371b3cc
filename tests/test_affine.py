"""affine (y = scale * x + bias, each a number or learned), an op added as one module (archcompiler/ops/affine.py):
against torch its shape, parameters (their state_dict keys and shapes), FLOPs, memory (measured) and values; the
spec's errors; and archc import of what timm's modules compute (#32), written here as small torch modules (timm
itself is measured in benchmarks/import_timm.py, never a dependency): HGNetV2's LearnableAffineBlock
(``self.scale * x + self.bias``, one number each), PoolFormer's Scale (``x * self.scale.view(C, 1, 1)``: a
layer_scale), ResMLP's Affine (``torch.addcmul(self.beta, self.alpha, x)``), FastViT's MobileOneBlock (its
sum of branches starts at the int 0) and NF-nets' constant gains (``x * 1.7015``, ``out * alpha + shortcut``)."""

from __future__ import annotations

import pytest
from conftest import assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import BackendError, SpecError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402


def _spec(layer: str, tokens: bool = False) -> str:
    """A conv (or a patch embedding: tokens), the affine layer ``a``, a pool and a linear head."""
    if tokens:
        return ("name: t\ninput: [3, 16, 16]\nlayers:\n  - {name: pe, op: patch_embed, out: 8, patch: 4}\n"
                f"  - {{name: a, op: affine, {layer}}}\n  - {{name: m, op: token_mean}}\n"
                "  - {name: fc, op: linear, out: 2}\n")
    return ("name: t\ninput: [3, 12, 12]\nlayers:\n  - {name: c, op: conv, out: 8, kernel: 3, padding: 1}\n"
            f"  - {{name: a, op: affine, {layer}}}\n  - {{name: p, op: global_avg_pool}}\n"
            "  - {name: fc, op: linear, out: 2}\n")


# (fields, on tokens, the state_dict entries of the layer a: key -> shape, element operations per element)
CASES = [
    ("scale: 1.7015", False, {}, 1),
    ("bias: -0.5", False, {}, 1),
    ("scale: 2, bias: 0.5", False, {}, 2),
    ("scale: learned, per: tensor", False, {"a": (1,)}, 1),
    ("bias: learned, per: tensor", False, {"a": (1,)}, 1),
    ("scale: learned, bias: learned, per: tensor", False, {"a.scale": (1,), "a.bias": (1,)}, 2),
    ("scale: learned, bias: learned", False, {"a.scale": (8, 1, 1), "a.bias": (8, 1, 1)}, 2),
    ("scale: learned, bias: 0.25, held: C", False, {"a": (8,)}, 2),
    ("scale: 3, bias: learned", False, {"a": (8, 1, 1)}, 2),
    ("scale: learned, bias: learned, held: 1x1xC, names: [alpha, beta]", True,
     {"a.alpha": (1, 1, 8), "a.beta": (1, 1, 8)}, 2),
    ("scale: learned", True, {"a": (8,)}, 1),
    ("scale: 0.5", True, {}, 1),
]


def _reference(model, layer: str, tokens: bool, x):
    """The network by hand: the affine map from the fields' numbers and the built module's parameters."""
    from torch.nn import functional as F

    fields = dict(part.split(": ") for part in layer.replace(", names: [alpha, beta]", "").split(", "))
    state = {k: v for k, v in model.state_dict().items() if k == "a" or k.startswith("a.")}
    learned = list(state.values())

    def value(name: str, default: float):
        if fields.get(name) != "learned":
            return float(fields.get(name, default))
        p = learned.pop(0)
        return p.view(-1, 1, 1) if not tokens and p.dim() == 1 and p.numel() > 1 else p
    scale, bias = value("scale", 1.0), value("bias", 0.0)
    if tokens:
        h = F.conv2d(x, model.pe.weight, model.pe.bias, stride=4).flatten(2).transpose(1, 2)
        return model.fc((scale * h + bias).mean(1))
    h = F.conv2d(x, model.c.weight, model.c.bias, padding=1)
    return model.fc(F.adaptive_avg_pool2d(scale * h + bias, 1).flatten(1))


@pytest.mark.parametrize(("layer", "tokens", "keys", "steps"), CASES, ids=[c[0] for c in CASES])
def test_shape_parameters_flops_and_values_agree_with_torch(layer, tokens, keys, steps):
    from torch.utils.flop_counter import FlopCounterMode

    text = _spec(layer, tokens)
    report = archcompiler.analyze(text, batch=2)
    model = trained_like(archcompiler.build(text, seed=0))
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if k == "a" or k.startswith("a.")}
    assert own == keys
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["a"]["params"] == sum(torch.Size(s).numel() for s in keys.values())
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    # the IR kind: affine (numbers) or learned_affine (a learned parameter, one node each)
    kinds = [report["by_op"][k] for k in ("affine", "learned_affine") if k in report["by_op"]]
    assert sum(k["macs"] for k in kinds) == 0
    elements = 8 * 16 if tokens else 8 * 12 * 12
    assert sum(k["elementwise"] for k in kinds) == 2 * steps * elements
    x = torch.randn(2, *((3, 16, 16) if tokens else (3, 12, 12)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
    assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"])
    with torch.no_grad():
        assert torch.equal(y, _reference(model, layer, tokens, x))


@pytest.mark.parametrize("layer", ["scale: 1.7015, bias: 0.5", "scale: learned, per: tensor",
                                   "scale: learned, bias: learned", "scale: 3, bias: learned"])
def test_memory_matches_a_measurement(layer):
    """Inference peak exactly, a training step within 1%: a learned scale keeps its input for backward, a number
    or a learned bias nothing; a product and a sum are one map (the sum computed over the product)."""
    assert_memory_measured(_spec(layer))


@pytest.mark.parametrize(("layer", "says"), [
    ("held: C", "'held' is the shape of a learned per-channel parameter"),
    ("scale: learned, per: tensor, held: C", "'held' is the shape of a learned per-channel parameter"),
    ("scale: learned, bias: learned, names: [w, w]", "two names"),
    ("scale: learned, bias: learned, names: [w, 1b]", "layers.a.names"),
    ("scale: learned, held: 1x1xC", "does not scale an image"),
    ("scale: often", "layers.a.scale"),
])
def test_what_it_cannot_hold_is_refused_at_the_layer(layer, says):
    with pytest.raises((SpecError, archcompiler.GraphError)) as info:
        archcompiler.analyze(_spec(layer))
    problem = info.value.errors[0]
    assert says in problem.format() and problem.line == 5, problem.format()


def test_numbers_scale_a_flat_vector_and_a_learned_scale_per_channel_is_refused_there():
    flat = _spec("scale: 0.5") + "  - {name: g, op: affine, scale: 0.5, bias: 1}\n"
    report = archcompiler.analyze(flat)
    assert report["rows"][-1]["output"] == [2] and report["by_op"]["affine"]["elementwise"] == 8 * 12 * 12 + 2 * 2
    with pytest.raises(archcompiler.GraphError) as info:
        archcompiler.analyze(flat.replace("scale: 0.5, bias: 1", "scale: learned"))
    assert "use per: tensor" in info.value.errors[0].message and info.value.errors[0].line == 8
    assert archcompiler.analyze(flat.replace("scale: 0.5, bias: 1", "scale: learned, per: tensor"))


# ----------------------------------------------------------------------------- import: what timm's modules compute


class LearnableAffineBlock(nn.Module):
    """HGNetV2's: one learned number each, ``scale * x + bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([1.0]))
        self.bias = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x):
        return self.scale * x + self.bias


class Scale(nn.Module):
    """PoolFormer's: a vector of C viewed as C x 1 x 1 in forward."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shape = (dim, 1, 1)
        self.scale = nn.Parameter(1e-5 * torch.ones(dim))

    def forward(self, x):
        return x * self.scale.view(self.shape)


class Affine(nn.Module):
    """ResMLP's "norm": one scale and one bias per feature of a token, held as 1 x 1 x D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones((1, 1, dim)))
        self.beta = nn.Parameter(torch.zeros((1, 1, dim)))

    def forward(self, x):
        return torch.addcmul(self.beta, self.alpha, x)


class MobileOneBlock(nn.Module):
    """FastViT's: the sum of the branches that exist, starting at the int 0 (no identity, no scale branch)."""

    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.identity = None
        self.conv_scale = None
        self.conv_kxk = nn.ModuleList([nn.Conv2d(c, out, 3, padding=1)])
        self.act = nn.GELU()

    def forward(self, x):
        identity_out = 0
        if self.identity is not None:
            identity_out = self.identity(x)
        scale_out = 0
        if self.conv_scale is not None:
            scale_out = self.conv_scale(x)
        out = scale_out + identity_out
        for rc in self.conv_kxk:
            out += rc(x)
        return self.act(out)


class NormFreeBlock(nn.Module):
    """NF-nets' constants: an activation times its gamma, the branch times alpha plus the shortcut; and the
    other numbers a forward may hold (1 - x, x / 2, x - 0.5, an in-place multiply)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        out = torch.relu(x) * 1.7015043497085571
        out = self.conv(out)
        out = (1 - out) / 2 - 0.5
        return out.mul_(0.2) + x


class Net(nn.Module):
    INPUT_SHAPE = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.stem = MobileOneBlock(3, 8)
        self.lab = LearnableAffineBlock()
        self.mixer = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.layer_scale = Scale(8)
        self.block = NormFreeBlock(8)
        self.patch = nn.Conv2d(8, 12, 4, stride=4)
        self.norm = Affine(12)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.lab(self.stem(x))
        x = x + self.layer_scale(self.mixer(x) - x)
        x = self.block(x)
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(t).mean(1))


def test_timm_like_modules_import_exactly():
    """Each layer keeps its module's state_dict keys: the learned numbers as PATH.scale and PATH.bias (each its own
    layer), ResMLP's as one layer with names alpha and beta; FastViT's 0 + conv(x) is the conv; NF-nets'
    numbers are affine layers."""
    model = trained_like(Net())
    text = archcompiler.import_module(model, name="net")
    assert "{name: lab.scale, op: affine, scale: learned, per: tensor}" in text
    assert "{name: lab.bias, op: affine, bias: learned, per: tensor}" in text
    assert "{name: layer_scale.scale, op: layer_scale, flat: true}" in text
    assert "op: affine, scale: learned, bias: learned, held: \"1x1xC\", names: [alpha, beta]" in text
    assert "op: affine, scale: 1.7015043497085571" in text and "op: affine, scale: -1.0, bias: 1.0" in text
    assert "op: affine, scale: 0.5}" in text and "op: affine, bias: -0.5}" in text and "scale: 0.2" in text
    assert "stem.add" not in text and "stem.affine" not in text        # 0 + conv(x): the conv
    rebuilt = archcompiler.build(text).eval()
    rebuilt.load_state_dict(model.state_dict())                         # strict: the same keys and shapes
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), rtol=0, atol=1e-6)


def test_the_command_imports_them_in_a_fresh_process(tmp_path):
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    module = source.split("class LearnableAffineBlock", 1)[1].split("def test_timm_like_modules", 1)[0]
    (tmp_path / "timmlike.py").write_text("import torch\nfrom torch import nn\n\n\nclass LearnableAffineBlock" + module)
    done = run_archc("import", "timmlike.py:Net", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    assert "op: affine" in (tmp_path / "net.yaml").read_text()


class _Odd(nn.Module):
    INPUT_SHAPE = (3, 8, 8)

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = Affine(4)

    def forward(self, x):
        x = self.conv(x)
        if self.how == "div":
            return x / 3
        if self.how == "rdiv":
            return 2 / x
        t = x.flatten(2).transpose(1, 2)
        if self.how == "value":
            return torch.addcmul(self.norm.beta, self.norm.alpha, t, value=2)
        return torch.addcmul(self.norm.beta, t, t)


@pytest.mark.parametrize(("how", "says"), [
    ("div", "a division by 3.0 (archc's affine multiplies: x / c is x * (1 / c) only where c is a power of two)"),
    ("rdiv", "a number divided by a tensor"),
    ("value", "value=2 (archc's affine is scale * x + bias)"),
    ("square", "reads the parameter or buffer 'norm.beta' directly"),
])
def test_what_it_cannot_compute_exactly_is_refused_in_one_line(how, says):
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(_Odd(how), name="odd")
    message = info.value.errors[0].message
    assert says in message and "\n" not in message, message


def test_numbers_in_an_onnx_file_import_as_affine_layers(tmp_path):
    """Keras's Rescaling(1 / 255, offset=-0.5) as an exporter writes it (a Mul and an Add of one number), then
    1 - x, x / 2 and x + 0 after a Conv: affine layers (the last none: adding 0 is the layer itself), equal to
    onnxruntime, verified by the import itself."""
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    number = {"s": 1 / 255, "o": -0.5, "one": 1.0, "two": 2.0, "zero": 0.0}
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "conv.weight"),
             *(numpy_helper.from_array(np.array(v, np.float32), k) for k, v in number.items())]
    nodes = [helper.make_node("Mul", ["x", "s"], ["xs"], name="rescale"),
             helper.make_node("Add", ["xs", "o"], ["xo"], name="offset"),
             helper.make_node("Conv", ["xo", "conv.weight"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Sub", ["one", "c"], ["d"], name="one_minus"),
             helper.make_node("Div", ["d", "two"], ["e"], name="half"),
             helper.make_node("Add", ["e", "zero"], ["y"], name="plus_zero")]
    graph = helper.make_graph(nodes, "rescaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    path = tmp_path / "rescaled.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    done = run_archc("import", str(path), "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "archc: verified:" in done.stderr, done.stderr
    import yaml

    layers = yaml.safe_load((tmp_path / "net.yaml").read_text())["layers"]
    assert [(layer["op"], layer.get("scale"), layer.get("bias")) for layer in layers] == [
        ("affine", pytest.approx(1 / 255), None), ("affine", None, -0.5), ("conv", None, False),
        ("affine", -1.0, 1.0), ("affine", 0.5, None)]
    built = archcompiler.build(str(tmp_path / "net.yaml"), weights=str(tmp_path / "net.safetensors")).eval()
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        got = built(torch.from_numpy(x)).numpy()
    assert np.abs(want - got).max() <= 1e-6 * np.abs(want).max()
