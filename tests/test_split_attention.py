"""Attention over branches (issue #32): ResNeSt's split attention and SKNet's selective kernel, written as
``branch_sum`` and ``branch_softmax`` (archcompiler/ops/branch_sum.py, branch_softmax.py) beside a concat,
a global pool, two 1 x 1 convolutions and a mul, as squeeze-and-excitation is. Against torch: shape,
parameters, FLOPs, logits and memory (measured); and ``archc import`` of modules that compute what timm's
``SplitAttn`` (with its ``RadixSoftmax``) and ``SelectiveKernel`` compute.

timm is no dependency: the references here are hand-written copies of timm's modules (the same attribute
names and forward); ``RadixSoftmax`` claims timm's module path, as the importer reads that class by name
and package. The check against timm's own resnest14d and skresnet18 is benchmarks/import_timm.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import BackendError, GraphError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent

# SKNet's selective kernel written by hand: two paths (3 x 3, and 3 x 3 dilated 2) stacked as a concatenation,
# their sum pooled, reduced, expanded to both paths' channels, a softmax over the paths, the weighted sum
SPEC = """name: sk_tiny
input: [8, 8, 8]
layers:
  - {name: p0, op: conv, out: 6, kernel: 3, padding: 1, norm: batch_norm, act: relu}
  - {name: p1, op: conv, out: 6, kernel: 3, padding: 2, dilation: 2, norm: batch_norm, act: relu, input: input}
  - {name: paths, op: concat, inputs: [p0, p1]}
  - {name: both, op: branch_sum, branches: 2}
  - {name: pool, op: global_avg_pool}
  - {name: fc1, op: conv, out: 4, kernel: 1, norm: batch_norm, act: relu}
  - {name: fc2, op: conv, out: 12, kernel: 1, bias: false}
  - {name: attn, op: branch_softmax, branches: 2, groups: 2}
  - {name: weighted, op: mul, inputs: [paths, attn]}
  - {name: out, op: branch_sum, branches: 2}
  - {name: gp, op: global_avg_pool}
  - {name: flat, op: flatten}
  - {name: fc, op: linear, out: 10}
"""


def _bn(x, m):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def _reference(m, x):
    """The network written by hand with torch's functions and the built module's weights: the softmax over the
    two branches in ResNeSt's cardinality layout (2 groups: in G x K x C / G, out K x G x C / G)."""
    p0 = F.relu(_bn(F.conv2d(x, m.p0.conv.weight, padding=1), m.p0.bn))
    p1 = F.relu(_bn(F.conv2d(x, m.p1.conv.weight, padding=2, dilation=2), m.p1.bn))
    a = F.relu(_bn(F.conv2d((p0 + p1).mean((2, 3), keepdim=True), m.fc1.conv.weight), m.fc1.bn))
    a = F.conv2d(a, m.fc2.weight).view(x.shape[0], 2, 2, 3).transpose(1, 2)       # N x K x G x C / G
    a = F.softmax(a, dim=1).reshape(x.shape[0], 2, 6, 1, 1)
    out = (torch.stack([p0, p1], 1) * a).sum(1)
    return F.linear(out.mean((2, 3)), m.fc.weight, m.fc.bias)


def test_shape_params_flops_and_logits_agree_with_torch():
    from torch.utils.flop_counter import FlopCounterMode

    report = archcompiler.analyze(SPEC, batch=2)
    rows = {r["name"]: r for r in report["rows"]}
    assert (rows["both"]["output"], rows["attn"]["output"], rows["out"]["output"]) == ([6, 8, 8], [12, 1, 1], [6, 8, 8])
    assert rows["both"]["params"] == rows["attn"]["params"] == rows["out"]["params"] == 0
    # element operations: a sum reads each of its K x C x H x W inputs once; a softmax 3 per element
    assert report["by_op"]["branch_sum"]["elementwise"] == 2 * (12 * 8 * 8 + 12 * 8 * 8)
    assert report["by_op"]["branch_softmax"]["elementwise"] == 2 * 3 * 12
    model = trained_like(archcompiler.build(SPEC, seed=0))
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    x = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x)
    assert counter.get_total_flops() == report["total"]["flops"]
    with torch.no_grad():
        assert torch.allclose(y, _reference(model, x), atol=1e-6)


def test_branches_that_do_not_divide_the_channels_are_refused_at_the_layer():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("{name: both, op: branch_sum, branches: 2}",
                                          "{name: both, op: branch_sum, branches: 5}"))
    assert "branches=5" in info.value.errors[0].message and info.value.errors[0].line == 7
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("branches: 2, groups: 2", "branches: 2, groups: 4"))
    assert "2 x 4" in info.value.errors[0].message and info.value.errors[0].line == 11


# the inference peak at the softmax over a whole map (its input and output alive beside the network's input)
BINDING = """name: bs
input: [4, 16, 16]
layers:
  - {name: c, op: conv, out: 12, kernel: 1}
  - {name: sm, op: branch_softmax, branches: 2, groups: 3}
  - {name: s, op: branch_sum, branches: 2}
  - {name: p, op: global_avg_pool}
  - {name: fc, op: linear, out: 2}
"""


@pytest.mark.parametrize("text", [SPEC, BINDING, BINDING.replace("groups: 3", "groups: 1")],
                         ids=["selective-kernel", "softmax-groups", "softmax"])
def test_memory_matches_a_measurement(text):
    """Inference peak exactly, a training step within 1%: the sum keeps nothing for backward, the softmax its
    output (measured)."""
    assert_memory_measured(text)


# ----------------------------------------------------------------------------- timm's modules, by hand


class RadixSoftmax(nn.Module):
    """timm.layers.split_attn.RadixSoftmax (timm 1.0), line for line."""

    def __init__(self, radix, cardinality):
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x):
        batch = x.size(0)
        if self.radix > 1:
            x = x.view(batch, self.cardinality, self.radix, -1).transpose(1, 2)
            x = F.softmax(x, dim=1)
            x = x.reshape(batch, -1)
        else:
            x = torch.sigmoid(x)
        return x


RadixSoftmax.__module__ = "timm.layers.split_attn"     # where timm's class lives: the importer reads it as a leaf


class SplitAttn(nn.Module):
    """timm.layers.split_attn.SplitAttn (timm 1.0): the same attributes and forward (BatchNorm, ReLU)."""

    def __init__(self, in_channels, out_channels, stride=1, groups=1, radix=2, attn_chs=32):
        super().__init__()
        self.radix = radix
        mid_chs = out_channels * radix
        self.conv = nn.Conv2d(in_channels, mid_chs, 3, stride, 1, groups=groups * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(mid_chs)
        self.drop = nn.Identity()
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_chs, 1, groups=groups)
        self.bn1 = nn.BatchNorm2d(attn_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_chs, mid_chs, 1, groups=groups)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x):
        x = self.conv(x)
        x = self.bn0(x)
        x = self.drop(x)
        x = self.act0(x)

        B, RC, H, W = x.shape
        if self.radix > 1:
            x = x.reshape((B, self.radix, RC // self.radix, H, W))
            x_gap = x.sum(dim=1)
        else:
            x_gap = x
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_gap = self.fc1(x_gap)
        x_gap = self.bn1(x_gap)
        x_gap = self.act1(x_gap)
        x_attn = self.fc2(x_gap)

        x_attn = self.rsoftmax(x_attn).view(B, -1, 1, 1)
        if self.radix > 1:
            out = (x * x_attn.reshape((B, self.radix, RC // self.radix, 1, 1))).sum(dim=1)
        else:
            out = x * x_attn
        return out.contiguous()


class ConvNormAct(nn.Module):
    def __init__(self, cin, cout, stride, dilation):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SelectiveKernelAttn(nn.Module):
    """timm.layers.selective_kernel.SelectiveKernelAttn (timm 1.0), line for line."""

    def __init__(self, channels, num_paths=2, attn_channels=32):
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(attn_channels)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False)

    def forward(self, x):
        torch._assert(x.shape[1] == self.num_paths, '')
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.fc_reduce(x)
        x = self.bn(x)
        x = self.act(x)
        x = self.fc_select(x)
        B, C, H, W = x.shape
        x = x.view(B, self.num_paths, C // self.num_paths, H, W)
        x = torch.softmax(x, dim=1)
        return x


class SelectiveKernel(nn.Module):
    """timm.layers.selective_kernel.SelectiveKernel (timm 1.0): its paths (3 x 3 kernels, dilated 1 and 2,
    the input split between them where split_input) and forward."""

    def __init__(self, in_channels, out_channels, stride=1, split_input=True, attn_channels=16):
        super().__init__()
        self.num_paths = 2
        self.in_channels = in_channels
        self.split_input = split_input
        cin = in_channels // 2 if split_input else in_channels
        self.paths = nn.ModuleList([ConvNormAct(cin, out_channels, stride, d) for d in (1, 2)])
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels)

    def forward(self, x):
        if self.split_input:
            x_split = torch.split(x, self.in_channels // self.num_paths, 1)
            x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        else:
            x_paths = [op(x) for op in self.paths]
        x = torch.stack(x_paths, dim=1)
        x_attn = self.attn(x)
        x = x * x_attn
        x = torch.sum(x, dim=1)
        return x


class Net(nn.Module):
    """A selective kernel, then a split attention (cardinality ``groups``), then the classifier."""

    def __init__(self, groups=1, radix=2, split_input=True):
        super().__init__()
        self.conv1 = SelectiveKernel(8, 16, stride=2, split_input=split_input)
        self.conv2 = SplitAttn(16, 16, groups=groups, radix=radix)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _exact(model, text):
    rebuilt = archcompiler.build(text).eval()
    rebuilt.load_state_dict(model.state_dict())             # strict: the same keys
    x = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-5)


@pytest.mark.parametrize("groups, split_input", [(1, True), (2, False)])
def test_split_attention_and_selective_kernel_import_exactly(groups, split_input):
    model = trained_like(Net(groups=groups, split_input=split_input))
    text = archcompiler.import_module(model, input=(8, 16, 16))
    assert "op: branch_softmax, branches: 2" in text and "op: branch_sum, branches: 2" in text
    assert ("groups: 2}" in text) == (groups == 2) and ("channel_split" in text) == split_input
    _exact(model, text)


def test_radix_one_is_refused_saying_why():
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Net(radix=1), input=(8, 16, 16))
    assert "conv2.rsoftmax (RadixSoftmax)" in str(info.value) and "radix of 1" in str(info.value)


def test_archc_import_reads_them_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process (the import verifies the spec against the module: exit 0 is exact)."""
    (tmp_path / "branches.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                          "from test_split_attention import Net  # noqa: E402,F401\n")
    done = run_archc("import", "branches.py:Net", "--arg", "groups=2", "--input", "8x16x16", "-o", "net.yaml",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "net.yaml").read_text()
    assert "groups: 2}" in text and "conv2.bn0" in text
    sys.modules.pop("branches", None)
