"""std_conv, the convolution with scaled weight standardisation of NF-ResNets and NFNets (issue #32), an op of its
own module (archcompiler/ops/std_conv.py): against torch its shape, parameters (the gain besides the weight and
bias), FLOPs, memory (measured) and logits; the generated module standalone and scripted; archc import of timm's
ScaledStdConv2d and ScaledStdConv2dSame in an NF block (their gamma and eps; the block's constant gains are
``affine`` layers), in a fresh process; and ONNX, whose exporter folds the standardised weight into the Conv.

timm is no dependency: the references are hand-written copies of timm's classes (their attributes and forward)
whose classes claim timm's module path, as the importer reads them by name and package. The check against timm's
own nf_resnet26 and nfnet_l0 runs in a side environment (benchmarks/import_timm.py)."""

from __future__ import annotations

import math

import pytest
from conftest import ROOT, assert_imports_back, assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler.errors import BackendError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

RELU_GAIN = 1.7139588594436646        # NF nets' gamma for ReLU (timm's _nonlin_gamma)

SPEC = ("name: nf\ninput: [3, 12, 12]\nlayers:\n"
        f"  - {{name: c1, op: std_conv, out: 8, kernel: 3, padding: 1, gamma: {RELU_GAIN}, eps: 1.0e-05, act: relu}}\n"
        "  - {name: c2, op: std_conv, out: 16, kernel: 3, stride: 2, padding: same, groups: 2, bias: false}\n"
        "  - {name: c3, op: std_conv, out: 16, kernel: 1, padding: same, gamma: 2.0}\n"
        "  - {name: p, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 2}\n")


def _standardised(w, gain, gamma, eps):
    """The paper's formula, written apart from timm's and archc's code: each output channel's weights less their
    mean, over their standard deviation (population variance plus eps), times the gain and gamma / sqrt(fan-in)."""
    flat = w.reshape(w.shape[0], -1)
    mean, var = flat.mean(1, keepdim=True), flat.var(1, unbiased=False, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + eps) * gain.reshape(-1, 1) * gamma / math.sqrt(flat.shape[1])) \
        .reshape(w.shape)


def test_shape_params_flops_and_logits_agree_with_torch():
    """Each layer holds weight, bias and gain (out x 1 x 1 x 1: timm's keys and shapes); MACs are the convolution's
    (torch's FLOP counter agrees; the standardisation is once a call, not per sample); the logits those of the
    formula, TensorFlow's 'same' at stride 2 included."""
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    model = trained_like(archcompiler.build(SPEC, seed=0))
    assert list(model.state_dict())[:3] == ["c1.weight", "c1.bias", "c1.gain"]
    assert tuple(model.c1.gain.shape) == (8, 1, 1, 1) and model.c2.bias is None
    rows = {r["name"]: r for r in report["rows"]}
    assert [rows[n]["output"] for n in ("c1", "c2", "c3")] == [[8, 12, 12], [16, 6, 6], [16, 6, 6]]
    assert [rows[n]["params"] for n in ("c1", "c2", "c3")] == [8 * 27 + 8 + 8, 16 * 36 + 16, 16 * 16 + 16 + 16]
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert counter.get_total_flops() == report["total"]["flops"] == 2 * report["total"]["macs"]
    m = model
    h = F.relu(F.conv2d(x, _standardised(m.c1.weight, m.c1.gain, RELU_GAIN, 1e-5), m.c1.bias, padding=1))
    h = F.conv2d(F.pad(h, (0, 1, 0, 1)), _standardised(m.c2.weight, m.c2.gain, 1.0, 1e-6), stride=2, groups=2)
    h = F.conv2d(h, _standardised(m.c3.weight, m.c3.gain, 2.0, 1e-6), m.c3.bias)
    torch.testing.assert_close(y, F.linear(h.mean((2, 3)), m.fc.weight, m.fc.bias), rtol=1e-4, atol=1e-5)


def test_the_generated_module_is_standalone_and_scripts():
    built = archcompiler.build(SPEC, seed=0).eval()
    assert "class ScaledStdConv2d(nn.Conv2d):" in built.code and "archcompiler" not in built.code
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(built)(x), built(x))


def test_memory_matches_a_measurement():
    """Inference peak exactly (the standardised weight, made once whatever the batch, beside the input and output;
    the padded copy of 'same' at stride 2), a training step within 1% (the input per sample, and once the
    standardised weight and the batch norm's statistics)."""
    assert_memory_measured(SPEC)


# ----------------------------------------------------------------------------- archc import


class ScaledStdConv2d(nn.Conv2d):
    """timm.layers.ScaledStdConv2d (timm 1.0): the same attributes and forward."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1, groups=1,
                 bias=True, gamma=1.0, eps=1e-6, gain_init=1.0):
        if padding is None:
            padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), gain_init))
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0., eps=self.eps
                              ).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2dSame(ScaledStdConv2d):
    """timm.layers.ScaledStdConv2dSame: TensorFlow's 'same' padding, made in forward where it depends on the size
    (``same_pad``: any stride above 1)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, **kwargs):
        self_pad = stride == 1 and (kernel_size - 1) % 2 == 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2 if self_pad else 0, **kwargs)
        self.same_pad = not self_pad

    def forward(self, x):
        if self.same_pad:
            (kh, _), (sh, _), ih = self.kernel_size, self.stride, x.size(-1)
            pad = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return super().forward(x)


ScaledStdConv2d.__module__ = ScaledStdConv2dSame.__module__ = "timm.layers.std_conv"   # read as timm's classes


class NormFreeBlock(nn.Module):
    """timm's NormFreeBlock (pre-activation bottleneck, no norm): ReLU times beta, the convolutions, the residual
    times alpha plus the shortcut (a ScaledStdConv2d of the pre-activated input where the shape changes)."""

    def __init__(self, cin, cout, stride, beta, conv):
        super().__init__()
        self.alpha, self.beta = 0.2, beta
        self.downsample = conv(cin, cout, 1, stride=stride) if cin != cout or stride != 1 else None
        self.act1, self.act2, self.act3 = nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU()
        self.conv1 = conv(cin, cout // 2, 1)
        self.conv2 = conv(cout // 2, cout // 2, 3, stride=stride)
        self.conv3 = conv(cout // 2, cout, 1, gain_init=0.0)

    def forward(self, x):
        out = self.act1(x) * self.beta
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv3(self.act3(self.conv2(self.act2(self.conv1(out)))))
        return out * self.alpha + shortcut


class Net(nn.Module):
    def __init__(self, same=False):
        super().__init__()
        conv = ScaledStdConv2dSame if same else ScaledStdConv2d
        from functools import partial

        conv = partial(conv, gamma=1.7139588594436646, eps=1e-5)
        self.stem = conv(3, 8, 3, stride=2)
        self.stages = nn.Sequential(NormFreeBlock(8, 16, 1, 1.0, conv), NormFreeBlock(16, 16, 1, 1 / 1.02 ** 0.5, conv),
                                    NormFreeBlock(16, 32, 2, 1 / 1.04 ** 0.5, conv))
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))


def same():
    return Net(same=True)


def _imports_back(model: nn.Module, text: str) -> None:
    assert_imports_back(model, text, atol=1e-6)

def test_archc_import_of_an_nf_net_in_a_fresh_process(tmp_path):
    """archc verifies the spec it writes against the module (exit 0: equal); gamma and eps are read from the
    layers, the gain is the layer's; with trained-like weights the spec computes the module's logits."""
    source = (ROOT / "tests" / "test_std_conv.py").read_text()
    code = source[source.index("\nclass ScaledStdConv2d(nn.Conv2d):"):source.index("\ndef _imports_back")]
    (tmp_path / "timm_like.py").write_text("import torch\nfrom torch import nn\nfrom torch.nn import functional as F"
                                           "\n\n\n" + code)
    done = run_archc("import", "timm_like.py:Net", "--input", "3x16x16", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert f"{{name: stem, op: std_conv, out: 8, kernel: 3, stride: 2, padding: 1, gamma: {RELU_GAIN:.12g}, " \
           "eps: 1.0e-05, act: relu}" in text
    assert "op: affine, scale: 0.2}" in text          # out * alpha: the other op of NF blocks (ops/affine.py)
    _imports_back(trained_like(Net()), text)


def test_timms_same_padding_variant_imports_with_padding_same():
    model = trained_like(same())
    text = archcompiler.import_module(model, input=(3, 15, 15))
    assert "{name: stem, op: std_conv, out: 8, kernel: 3, stride: 2, padding: same," in text
    assert "stages.1.conv2, op: std_conv, out: 8, kernel: 3, padding: 1," in text    # stride 1: as timm pads it
    _imports_back(model, text)


def test_archcs_own_module_imports_back():
    text = SPEC.replace("stride: 2, padding: same", "stride: 2, padding: 1")      # F.pad before it: no archc op
    built = trained_like(archcompiler.build(text, seed=0))
    imported = archcompiler.import_module(built, input=(3, 12, 12))
    assert "{name: c3, op: std_conv, out: 16, kernel: 1, padding: same, gamma: 2.0}" in imported
    _imports_back(built, imported)


def test_a_gain_that_is_not_one_per_output_channel_is_refused_saying_why():
    model = Net()
    model.stages[1].conv2.gain = nn.Parameter(torch.ones(8))         # runs (viewed as a vector), but no gain of archc's
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model, input=(3, 16, 16))
    message = str(info.value)
    assert "stages.1.conv2 (ScaledStdConv2d)" in message and "a gain of shape [8]" in message


@pytest.mark.slow
def test_the_onnx_export_folds_the_standardised_weight_into_the_conv(tmp_path):
    """archc build --emit onnx: the exporter computes the standardised weight (a constant) and writes a Conv with
    it, the deployment form, as it folds a BatchNorm; archc import reads convolutions with those weights back, and
    the logits are the same."""
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    from archcompiler.backends.torch.export import export
    from archcompiler.cli import main

    spec = archcompiler.load_spec(SPEC)
    original = trained_like(archcompiler.build(spec, seed=0))
    export(original, spec, "onnx", tmp_path / "nf.onnx")
    assert [n.op_type for n in onnx.load(str(tmp_path / "nf.onnx")).graph.node][:2] == ["Conv", "Relu"]
    assert main(["import", str(tmp_path / "nf.onnx"), "-o", str(tmp_path / "nf.yaml")]) == 0
    imported = archcompiler.load_spec(tmp_path / "nf.yaml")
    assert [lay.op for lay in imported.layers][:3] == ["conv", "conv", "conv"]
    rebuilt = archcompiler.build(imported, weights=str(tmp_path / "nf.safetensors")).eval()
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x), rtol=1e-5, atol=1e-5)
