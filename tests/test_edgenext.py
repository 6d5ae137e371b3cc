"""timm's EdgeNeXt (issue #32): the Fourier position encoding (``fourier_position``), cross-covariance attention
(``xca``), the split-transpose block's Res2Net-like depthwise convolutions over chunks of the channels, its tokens
laid back out as a channels-last map (``to_map``), the ConvNeXt-like conv block, the stem and downsampling.

timm is no dependency: the reference is a hand-written copy of timm's EdgeNeXt modules (timm/models/edgenext.py:
PositionalEncodingFourier, ConvBlock, CrossCovarianceAttn, SplitTransposeBlock, the stages, the stem and the
head; the same attributes and forward), the two classes archc reads as leaves claiming timm's module path, in a
small model. timm's own edgenext models are measured in a side environment (benchmarks/import_timm.py)."""

from __future__ import annotations

import inspect
import math
import sys

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc
from timm_like import Mlp

import archcompiler
from archcompiler import BackendError, GraphError, SpecError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

# ----------------------------------------------------------------------------- timm's modules, by hand (MODULE)


class PositionalEncodingFourier(nn.Module):
    """timm.models.edgenext.PositionalEncodingFourier (timm 1.0): the same attributes, the same forward."""

    def __init__(self, hidden_dim=32, dim=768, temperature=10000.0):
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.scale = 2 * math.pi
        self.temperature = temperature
        self.hidden_dim = hidden_dim
        self.dim = dim

    def forward(self, shape):
        device = self.token_projection.weight.device
        dtype = self.token_projection.weight.dtype
        inv_mask = ~torch.zeros(shape).to(device=device, dtype=torch.bool)
        y_embed = inv_mask.cumsum(1, dtype=torch.float32)
        x_embed = inv_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.hidden_dim, dtype=torch.int64, device=device).to(torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden_dim)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        return self.token_projection(pos.to(dtype))


class CrossCovarianceAttn(nn.Module):
    """timm.models.edgenext.CrossCovarianceAttn (timm 1.0): the same attributes, the same forward."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        attn = attn.softmax(dim=-1)
        attn = self.attn_drop(attn)
        x = (attn @ v)
        x = x.permute(0, 3, 1, 2).reshape(B, N, C)
        x = self.proj(x)
        return self.proj_drop(x)


PositionalEncodingFourier.__module__ = CrossCovarianceAttn.__module__ = "timm.models.edgenext"     # leaves


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: F.layer_norm over the channels-last view."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvBlock(nn.Module):
    """timm's EdgeNeXt ConvBlock at stride 1: a depthwise conv, then channels-last LayerNorm, Mlp and gamma."""

    def __init__(self, dim, kernel_size=7):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.mlp(x)
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class SplitTransposeBlock(nn.Module):
    """timm's EdgeNeXt SplitTransposeBlock: the same attributes, the same forward."""

    def __init__(self, dim, num_scales=1, num_heads=8, use_pos_emb=True, **attention):
        super().__init__()
        width = max(int(math.ceil(dim / num_scales)), int(math.floor(dim // num_scales)))
        self.width = width
        self.num_scales = max(1, num_scales - 1)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1, groups=width)
                                    for _ in range(self.num_scales)])
        self.pos_embd = PositionalEncodingFourier(dim=dim) if use_pos_emb else None
        self.norm_xca = nn.LayerNorm(dim, eps=1e-6)
        self.gamma_xca = nn.Parameter(1e-6 * torch.ones(dim))
        self.xca = CrossCovarianceAttn(dim, num_heads=num_heads, qkv_bias=True, **attention)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x
        spx = x.chunk(len(self.convs) + 1, dim=1)
        spo = []
        sp = spx[0]
        for i, conv in enumerate(self.convs):
            if i > 0:
                sp = sp + spx[i]
            sp = conv(sp)
            spo.append(sp)
        spo.append(spx[-1])
        x = torch.cat(spo, 1)
        B, C, H, W = x.shape
        x = x.reshape(B, C, H * W).permute(0, 2, 1)
        if self.pos_embd is not None:
            pos_encoding = self.pos_embd((B, H, W)).reshape(B, -1, x.shape[1]).permute(0, 2, 1)
            x = x + pos_encoding
        x = x + self.drop_path(self.gamma_xca * self.xca(self.norm_xca(x)))
        x = x.reshape(B, H, W, C)
        x = self.norm(x)
        x = self.mlp(x)
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class Stage(nn.Module):
    def __init__(self, in_chs, out_chs, blocks, stride=2):
        super().__init__()
        self.downsample = nn.Identity() if stride == 1 else nn.Sequential(
            LayerNorm2d(in_chs, eps=1e-6), nn.Conv2d(in_chs, out_chs, kernel_size=2, stride=2))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """timm's NormMlpClassifierHead without a hidden layer: average pool, LayerNorm2d, flatten, fc."""

    def __init__(self, dim, classes):
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.norm(self.global_pool(x))))


class EdgeNeXt(nn.Module):
    """timm's EdgeNeXt, small: 32 x 32 images, the patch stem (4 x 4), three stages of 8, 16 and 26 channels;
    the second a conv block and a split-transpose block of two scales with the position encoding, the third a
    split-transpose block of three uneven chunks (9, 9, 8) without it."""

    INPUT_SHAPE = (3, 32, 32)

    def __init__(self, classes=10, attention=None):
        super().__init__()
        attention = attention or {}
        self.stem = nn.Sequential(nn.Conv2d(3, 8, kernel_size=4, stride=4), LayerNorm2d(8, eps=1e-6))
        self.stages = nn.Sequential(
            Stage(8, 8, [ConvBlock(8, 3)], stride=1),
            Stage(8, 16, [ConvBlock(16, 5), SplitTransposeBlock(16, 2, 2, True, **attention)]),
            Stage(16, 26, [SplitTransposeBlock(26, 3, 2, False, **attention)]))
        self.norm_pre = nn.Identity()
        self.head = Head(26, classes)

    def forward(self, x):
        return self.head(self.norm_pre(self.stages(self.stem(x))))


def edgenext(**kwargs) -> EdgeNeXt:
    """The callable `archc import` runs: seeded, every parameter drawn (the layer scales and temperatures far
    from their initial values, so that every branch counts in the logits)."""
    torch.manual_seed(0)
    model = EdgeNeXt(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- end of MODULE


def _module_source() -> str:
    source = inspect.getsource(sys.modules[__name__])
    module = source.split("# " + "-" * 77 + " timm's modules, by hand (MODULE)", 1)[1].split("# " + "-" * 77, 1)[0]
    return "import math\nimport torch\nfrom torch import nn\nF = torch.nn.functional\n" + inspect.getsource(Mlp) + module


def test_the_model_imports_exactly_through_the_command(tmp_path):
    """`archc import` in a fresh process: verified by archc, and again here (built from the written file, the
    module's state_dict loaded strictly, the same logits and parameter count)."""
    (tmp_path / "edgenextlike.py").write_text(_module_source())
    done = run_archc("import", "edgenextlike.py:edgenext", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    for line in ("pos_embd, op: fourier_position,", "xca, op: xca, heads: 2", "to_map, op: to_map",
                 "{name: stages.2.blocks.0.channel_slice_2, op: channel_slice, start: 18, end: 26",
                 "gamma_xca, op: layer_scale"):
        assert line in text, text
    assert text.count("op: fourier_position") == 1 and text.count("op: xca") == 2
    assert_imports_back(edgenext(), text, atol=1e-4)


# ----------------------------------------------------------------------------- the ops by hand, against torch

SPEC = """\
name: ops
input: [3, 32, 32]
layers:
  - {name: stem, op: conv, out: 16, kernel: 4, stride: 4}
  - {name: to_tokens, op: to_tokens}
  - {name: pos_embd, op: fourier_position, input: stem}
  - {name: pos, op: to_tokens}
  - {name: add, op: add, inputs: [to_tokens, pos]}
  - {name: norm_xca, op: layer_norm, eps: 1.0e-6}
  - {name: xca, op: xca, heads: 4}
  - {name: to_map, op: to_map}
  - {name: pool, op: global_avg_pool}
  - {name: fc, op: linear, out: 5}
"""


class Reference(nn.Module):
    """What SPEC computes, from the modules timm's EdgeNeXt is made of."""

    def __init__(self, dim=16, heads=4, hidden=32, **attention):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.pos_embd = PositionalEncodingFourier(hidden, dim)
        self.norm_xca = nn.LayerNorm(dim, eps=1e-6)
        self.xca = CrossCovarianceAttn(dim, heads, qkv_bias=True, **attention)
        self.fc = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embd((b, h, w)).flatten(2).transpose(1, 2)
        x = self.xca(self.norm_xca(x))
        return self.fc(x.mean(1))


def _reference(**kwargs) -> Reference:
    torch.manual_seed(0)
    model = Reference(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


def test_the_hand_written_ops_are_timms_keys_logits_params_and_flops():
    """Built, the spec has the reference's state_dict keys, loads its weights strictly and gives its logits at a
    batch of one and of three (the encoding is every sample's); its parameters are the reference's, and its
    FLOPs what FlopCounterMode counts in the reference at a batch of one."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = archcompiler.load_spec(SPEC)
    built = archcompiler.build(spec, seed=0).eval()
    reference = _reference()
    assert list(built.state_dict()) == list(reference.state_dict())
    built.load_state_dict(reference.state_dict(), strict=True)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-5)
    report = archcompiler.analyze(spec)
    assert report["total"]["params"] == sum(p.numel() for p in reference.parameters())
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["pos_embd"]["output"] == [16, 8, 8] and rows["xca"]["output"] == [64, 16]
    assert report["by_op"]["fourier_position"]["params"] == 64 * 16 + 16
    assert report["by_op"]["xca"]["params"] == 4 * 16 * 16 + 4 + 4 * 16
    for model in (reference, built):
        with FlopCounterMode(display=False) as counted:
            model(torch.randn(1, 3, 32, 32))
        assert counted.get_total_flops() == report["total"]["flops"]


def test_the_encoding_follows_the_input_and_xca_its_heads_in_random_small_configurations():
    """The shape, parameters and FLOPs (FlopCounterMode, a batch of one) of the ops on maps that are not square, with
    and without the qkv bias; the encoding of the input's width, or of a width of its own."""
    import random

    from torch.utils.flop_counter import FlopCounterMode

    r = random.Random(5)
    for k in range(4):
        heads, dim, hidden = r.choice([1, 2, 3]), 6 * r.randint(1, 3), 2 * r.randint(1, 8)
        h, w, bias = 4 * r.randint(1, 3), 4 * r.randint(1, 3), r.choice(["true", "false"])
        own = k % 2 == 1
        text = (f"name: t\ninput: [3, {h}, {w}]\nlayers:\n  - {{name: c, op: conv, out: {dim}, kernel: 4, stride: 4}}\n"
                f"  - {{name: p, op: fourier_position, hidden_dim: {hidden}{', dim: 5' if own else ''}}}\n"
                + ("  - {name: g, op: global_avg_pool}\n  - {name: f, op: linear, out: 3}\n" if own else
                   f"  - {{name: s, op: add, inputs: [c, p]}}\n  - {{name: t, op: to_tokens}}\n"
                   f"  - {{name: a, op: xca, heads: {heads}, qkv_bias: {bias}}}\n"))
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        rows = {row["name"]: row for row in report["rows"]}
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            y = model(torch.randn(1, 3, h, w))
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]), text
        assert rows["p"]["output"] == [5 if own else dim, h // 4, w // 4], text
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == report["total"]["flops"], text


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_the_inference_peak_is_measured(batch):
    """Each op where it holds the peak: xca over one head and several (the batched product copies q over
    several samples and heads), the encoding at a narrow map beside wide features (the projection's peak) and
    at a wide one (the copy to the batch)."""
    for heads, dim in ((1, 8), (3, 24), (4, 48)):
        text = (f"name: t\ninput: [3, 32, 32]\nlayers:\n  - {{name: p, op: patch_embed, out: {dim}, patch: 4}}\n"
                f"  - {{name: n, op: layer_norm}}\n  - {{name: a, op: xca, heads: {heads}}}\n"
                "  - {name: s, op: token_mean}\n  - {name: head, op: linear, out: 3}\n")
        assert_memory_measured(text, infer_batch=batch, train_batch=None)
    for size, dim, hidden in ((16, 4, 32), (32, 24, 32), (64, 48, 8)):
        text = (f"name: t\ninput: [3, {size}, {size}]\nlayers:\n  - {{name: c, op: conv, out: {dim}, kernel: 4, "
                f"stride: 4}}\n  - {{name: p, op: fourier_position, hidden_dim: {hidden}}}\n"
                "  - {name: a, op: add, inputs: [c, p]}\n  - {name: g, op: global_avg_pool}\n"
                "  - {name: head, op: linear, out: 3}\n")
        assert_memory_measured(text, infer_batch=batch, train_batch=None)


def test_a_training_step_is_measured():
    """Within 1%: xca over several heads, its output kept by a layer scale as in EdgeNeXt's blocks, and the
    encoding (its features kept once per forward) beside it."""
    for heads, dim in ((2, 8), (3, 24)):
        text = (f"name: t\ninput: [3, 32, 32]\nlayers:\n  - {{name: p, op: patch_embed, out: {dim}, patch: 4}}\n"
                f"  - {{name: n, op: layer_norm}}\n  - {{name: a, op: xca, heads: {heads}}}\n"
                "  - {name: g, op: layer_scale}\n  - {name: s, op: token_mean}\n  - {name: head, op: linear, out: 3}\n")
        assert_memory_measured(text, infer_batch=1, train_batch=8)
    assert_memory_measured(SPEC, infer_batch=2, train_batch=8)


def test_archcs_own_built_module_imports_back_to_the_same_ops():
    """The generated module's FourierPosition and CrossCovarianceAttention are read as the ops again (the stem
    activated: a convolution read as tokens alone is a patch embedding)."""
    text = SPEC.replace("heads: 4}", "heads: 4, qkv_bias: false}").replace("stride: 4}", "stride: 4, act: gelu}").replace(
        "  - {name: to_map, op: to_map}\n  - {name: pool, op: global_avg_pool}\n", "  - {name: pool, op: token_mean}\n")
    built = archcompiler.build(archcompiler.load_spec(text), seed=0).eval()
    again = archcompiler.import_module(built, name="again")
    assert "op: xca, heads: 4, qkv_bias: false}" in again and "op: fourier_position" in again
    assert_imports_back(built, again)


# ----------------------------------------------------------------------------- what is refused


def test_what_the_ops_cannot_express_is_refused_saying_where_and_why():
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(edgenext(attention={"proj_drop": 0.1}))
    message = info.value.errors[0].format()
    assert "stages.1.blocks.1.xca (CrossCovarianceAttn)" in message and "proj_drop" in message
    model = edgenext()
    model.stages[1].blocks[1].pos_embd.token_projection = nn.Conv2d(64, 16, 3, padding=1)
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model)
    message = info.value.errors[0].format()
    assert "stages.1.blocks.1.pos_embd (PositionalEncodingFourier)" in message and "1 x 1 convolution" in message


def test_shapes_and_fields_the_ops_cannot_take_are_refused_at_the_layer():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("xca, heads: 4", "xca, heads: 5"))
    assert "xca" in str(info.value) and "heads=5 does not divide" in str(info.value)
    with pytest.raises((SpecError, GraphError)) as info:
        archcompiler.load_spec(SPEC.replace("op: fourier_position,", "op: fourier_position, hidden_dim: 5,"))
    assert "hidden_dim 5 is odd" in str(info.value)
    text = SPEC.replace("{name: pos_embd, op: fourier_position, input: stem}",
                        "{name: pos_embd, op: fourier_position, input: to_tokens}")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    assert "fourier_position needs an image" in str(info.value)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
