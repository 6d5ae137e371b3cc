"""grn, ConvNeXt V2's global response normalisation (issue #32), an op of its own module (archcompiler/ops/grn.py):
against torch its shape, parameters, FLOPs, memory (measured) and logits; the generated module standalone and
scripted; and archc import of timm's GlobalResponseNorm, channels-first (after a 1 x 1 convolution: ConvNeXt V2
atto's MLP) and channels-last (after x.permute(0, 2, 3, 1): the larger ConvNeXt V2's), in a fresh process.

timm is no dependency: the reference is a hand-written copy of timm's ``GlobalResponseNorm`` (its attributes and
forward) whose class claims timm's module path, as the importer reads that class by name and package. The check
against timm's own convnextv2_atto runs in a side environment (benchmarks/import_timm.py)."""

from __future__ import annotations

import pytest
from conftest import ROOT, assert_imports_back, assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import GraphError
from archcompiler.errors import BackendError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

SPEC = ("name: grn\ninput: [3, 10, 10]\nlayers:\n"
        "  - {name: c1, op: conv, out: 8, kernel: 3, padding: 1, act: gelu}\n"
        "  - {name: g1, op: grn}\n"
        "  - {name: c2, op: conv, out: 16, kernel: 3, stride: 2, padding: 1}\n"
        "  - {name: g2, op: grn, eps: 0.001}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def _grn(x, weight, bias, eps):
    """The paper's formula, written apart from timm's and archc's code."""
    g = torch.sqrt((x * x).sum(dim=(2, 3), keepdim=True))
    n = g / (g.mean(dim=1, keepdim=True) + eps)
    return weight.view(1, -1, 1, 1) * (x * n) + bias.view(1, -1, 1, 1) + x


def test_shape_params_flops_and_logits_agree_with_torch():
    """2C parameters each (weight, bias: timm's keys), no buffers; FLOPs as torch counts them (the convolutions and
    the linear layer; grn's 6 element operations per element apart); the logits those of the formula."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    model = trained_like(archcompiler.build(SPEC, seed=0))
    assert [k for k in model.state_dict() if k.startswith("g1")] == ["g1.weight", "g1.bias"]
    rows = {r["name"]: r for r in report["rows"]}
    assert (rows["g1"]["output"], rows["g2"]["output"]) == ([8, 10, 10], [16, 5, 5])
    assert (rows["g1"]["params"], rows["g2"]["params"], rows["g1"]["buffers"]) == (16, 32, 0)
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    assert report["by_op"]["grn"]["elementwise"] == 2 * 6 * (8 * 10 * 10 + 16 * 5 * 5)
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
    m = model
    h = _grn(F.gelu(F.conv2d(x, m.c1.weight, m.c1.bias, padding=1)), m.g1.weight, m.g1.bias, 1e-6)
    h = _grn(F.conv2d(h, m.c2.weight, m.c2.bias, stride=2, padding=1), m.g2.weight, m.g2.bias, 1e-3)
    expected = F.linear(h.mean(dim=(2, 3)), m.fc.weight, m.fc.bias)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-6)


def test_the_generated_module_is_standalone_and_scripts():
    built = archcompiler.build(SPEC, seed=0).eval()
    assert "class GlobalResponseNorm(nn.Module):" in built.code and "archcompiler" not in built.code
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(built)(x), built(x))


def test_a_flat_input_is_refused_at_the_layer():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("{name: fc, op: linear, out: 2}", "{name: fc, op: linear, out: 4}\n"
                                          "  - {name: g3, op: grn}"))
    assert "image" in info.value.errors[0].message and info.value.errors[0].line == 10


def test_memory_matches_a_measurement():
    """Inference peak exactly (the product x * N(x) and the norms beside the input and output), a training step
    within 1% (autograd keeps the input, that product and the per-channel norms)."""
    assert_memory_measured(SPEC)


# ----------------------------------------------------------------------------- archc import


class GlobalResponseNorm(nn.Module):
    """timm.layers.GlobalResponseNorm (timm 1.0), line for line."""

    def __init__(self, dim, eps=1e-6, channels_last=True):
        super().__init__()
        self.eps = eps
        if channels_last:
            self.spatial_dim = (1, 2)
            self.channel_dim = -1
            self.wb_shape = (1, 1, 1, -1)
        else:
            self.spatial_dim = (2, 3)
            self.channel_dim = 1
            self.wb_shape = (1, -1, 1, 1)
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n)


GlobalResponseNorm.__module__ = "timm.layers.grn"      # where timm's class lives: the importer reads it as a leaf


class Mlp(nn.Module):
    """timm's GlobalResponseNormMlp: 1 x 1 convolutions on the map (use_conv), or Linears channels-last."""

    def __init__(self, dim, conv):
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.fc1, self.act, self.grn, self.fc2 = layer(dim, 4 * dim), nn.GELU(), \
            GlobalResponseNorm(4 * dim, channels_last=not conv), layer(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.grn(self.act(self.fc1(x))))


class Block(nn.Module):
    """ConvNeXt V2's block: a depthwise 7 x 7 convolution, a norm, the MLP; channels-first where ``conv``, else
    on the channels-last view (timm's conv_mlp)."""

    def __init__(self, dim, conv):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.conv = conv
        self.norm = nn.GroupNorm(1, dim) if conv else nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, conv)

    def forward(self, x):
        y = self.conv_dw(x)
        if self.conv:
            y = self.mlp(self.norm(y))
        else:
            y = self.mlp(self.norm(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return y + x


class Net(nn.Module):
    def __init__(self, conv=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.blocks = nn.Sequential(Block(8, conv), Block(8, conv))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def channels_last():
    return Net(conv=False)


def _imports_back(model: nn.Module, text: str) -> None:
    assert_imports_back(model, text, atol=1e-6)

def test_archc_import_of_timms_grn_in_a_fresh_process(tmp_path):
    """archc verifies the spec it writes against the module (exit 0: equal); the spec keeps timm's keys and, with
    trained-like weights, computes the module's logits."""
    source = (ROOT / "tests" / "test_grn.py").read_text()
    code = source[source.index("\nclass GlobalResponseNorm(nn.Module):"):source.index("\ndef _imports_back")]
    (tmp_path / "timm_like.py").write_text("import torch\nfrom torch import nn\n\n\n" + code)
    done = run_archc("import", "timm_like.py:Net", "--input", "3x16x16", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert "{name: mlp.grn, op: grn}" in text
    _imports_back(trained_like(Net()), text)


def test_timms_grn_on_the_channels_last_view_imports_as_grn_on_the_map():
    """ConvNeXt V2's larger models run the MLP on x.permute(0, 2, 3, 1): the GRN there normalises the same values,
    and the spec's grn on the map computes them."""
    model = trained_like(channels_last())
    text = archcompiler.import_module(model, input=(3, 16, 16))
    assert "{name: mlp.grn, op: grn}" in text and "over: channels" in text
    _imports_back(model, text)


def test_archcs_own_module_imports_back():
    built = trained_like(archcompiler.build(SPEC, seed=0))
    text = archcompiler.import_module(built, input=(3, 10, 10))
    assert "{name: g1, op: grn}" in text and "{name: g2, op: grn, eps: 0.001}" in text
    _imports_back(built, text)


def test_a_channels_last_grn_on_a_channels_first_map_is_refused_saying_why():
    """timm's GRN made for channels-last tensors, given an N x C x H x W map whose width is its channels (so that
    it runs): refused at the module, not imported as something it does not compute."""
    model = Net(conv=True)
    model.blocks[1].mlp.grn = GlobalResponseNorm(32, channels_last=True)
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model, input=(3, 64, 64))
    message = str(info.value)
    assert "blocks.1.mlp.grn (GlobalResponseNorm)" in message and "channels-first map" in message
