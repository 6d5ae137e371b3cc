"""MobileViT's transformer (issue #32): ``patch_attention`` is the attention among the positions of a map that
share their offset within p x p patches, laid out and computed as timm's ``Attention`` on MobileViT's unfolded
patches (runtime.py's PatchAttention), and ``archc import`` reads timm's ``MobileVitBlock``: its forward
branches on sizes (``if new_h != H``: an interpolate where the patch does not tile the map), which are numbers
at the given input, and its unfold and fold of the map (reshapes and transposes) are read as the map itself.

timm is no dependency: the reference here is a hand-written copy of timm's ``MobileVitBlock`` and of the
``Attention`` and ``Block`` of its transformer (the same attribute names and forwards), whose Attention class
claims timm's module path, as the importer reads a class by name and package. The check against timm's own
mobilevit_xxs runs in a side environment with timm installed (benchmarks/import_timm.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc, trained_like
from timm_like import Mlp

import archcompiler
from archcompiler import BackendError
from archcompiler.errors import GraphError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- timm's modules, by hand


class Attention(nn.Module):
    """timm.layers.Attention (timm 1.0), its fused path: the same attributes, the same forward."""

    def __init__(self, dim, num_heads=4, qkv_bias=True, qk_norm=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, attn_mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(self.norm(x)))


Attention.__module__ = "timm.layers.attention"      # where timm's class lives: the importer reads it as a leaf


class Block(nn.Module):
    """timm's vision_transformer.Block, MobileViT's TransformerBlock."""

    def __init__(self, dim, heads, **attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, **attention)
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim, nn.SiLU)
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x, attn_mask=None):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def conv_bn_act(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class MobileVitBlock(nn.Module):
    """timm's MobileVitBlock (timm/models/mobilevit.py), its forward line for line."""

    def __init__(self, chs, dim, depth=2, patch_size=2, heads=4, **attention):
        super().__init__()
        self.conv_kxk = conv_bn_act(chs, chs, 3)
        self.conv_1x1 = nn.Conv2d(chs, dim, kernel_size=1, bias=False)
        self.transformer = nn.Sequential(*[Block(dim, heads, **attention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = conv_bn_act(dim, chs, 1)
        self.conv_fusion = conv_bn_act(2 * chs, chs, 3)
        self.patch_size = (patch_size, patch_size)
        self.patch_area = patch_size * patch_size

    def forward(self, x):
        shortcut = x
        x = self.conv_kxk(x)
        x = self.conv_1x1(x)
        patch_h, patch_w = self.patch_size
        B, C, H, W = x.shape
        new_h, new_w = math.ceil(H / patch_h) * patch_h, math.ceil(W / patch_w) * patch_w
        num_patch_h, num_patch_w = new_h // patch_h, new_w // patch_w
        num_patches = num_patch_h * num_patch_w
        interpolate = False
        if new_h != H or new_w != W:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
            interpolate = True
        x = x.reshape(B * C * num_patch_h, patch_h, num_patch_w, patch_w).transpose(1, 2)
        x = x.reshape(B, C, num_patches, self.patch_area).transpose(1, 3).reshape(B * self.patch_area, num_patches, -1)
        x = self.transformer(x)
        x = self.norm(x)
        x = x.contiguous().view(B, self.patch_area, num_patches, -1)
        x = x.transpose(1, 3).reshape(B * C * num_patch_h, num_patch_w, patch_h, patch_w)
        x = x.transpose(1, 2).reshape(B, C, num_patch_h * patch_h, num_patch_w * patch_w)
        if interpolate:
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)
        return self.conv_fusion(torch.cat((shortcut, x), dim=1))


class TinyMobileViT(nn.Module):
    """A small MobileViT: 3 x 20 x 20 images, a stride-2 stem (10 x 10: patch 2 tiles it), a MobileViT block,
    a stride-2 conv (5 x 5: patch 2 does not tile it, the block interpolates to 6 x 6 and back), a second block
    (patch 2: one offset per sequence of 9), and the classifier."""

    INPUT_SHAPE = (3, 20, 20)

    def __init__(self, **attention):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU())
        self.stage1 = MobileVitBlock(8, 16, depth=2, heads=4, **attention)
        self.down = nn.Conv2d(8, 12, 3, 2, 1)
        self.stage2 = MobileVitBlock(12, 24, depth=1, heads=2, **attention)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def tiny_mobilevit(**attention) -> TinyMobileViT:
    """The callable `archc import` runs (seeded: the same weights in every process)."""
    torch.manual_seed(0)
    return trained_like(TinyMobileViT(**attention))


# ----------------------------------------------------------------------------- the op


def _spec(c: int = 16, heads: int = 4, patch: int = 2, size: int = 8, extra: str = "") -> str:
    return (f"name: t\ninput: [3, {size}, {size}]\nlayers:\n"
            f"  - {{name: c, op: conv, out: {c}, kernel: 3, padding: 1}}\n"
            f"  - {{name: attn, op: patch_attention, heads: {heads}, patch: {patch}{extra}}}\n"
            "  - {name: p, op: global_avg_pool}\n  - {name: f, op: flatten}\n  - {name: h, op: linear, out: 2}\n")


def _reference(x, attn: Attention, p: int):
    """What MobileVitBlock computes around its transformer's attention: unfold, attention, fold."""
    B, C, H, W = x.shape
    nh, nw = H // p, W // p
    x = x.reshape(B * C * nh, p, nw, p).transpose(1, 2).reshape(B, C, nh * nw, p * p).transpose(1, 3)
    x = attn(x.reshape(B * p * p, nh * nw, -1))
    x = x.contiguous().view(B, p * p, nh * nw, -1).transpose(1, 3).reshape(B * C * nh, nw, p, p)
    return x.transpose(1, 2).reshape(B, C, H, W)


@pytest.mark.parametrize("c, heads, patch, size, bias", [(16, 4, 2, 8, True), (12, 3, 4, 8, False), (8, 1, 2, 6, True)],
                         ids=["4-heads", "3-heads-patch-4-no-bias", "1-head"])
def test_the_op_computes_mobilevits_attention_with_its_shape_params_and_flops(c, heads, patch, size, bias):
    """Against the unfold, timm's Attention and the fold: the values (the same state_dict), the shape, the
    parameters and the FLOPs FlopCounterMode counts (the math backend: it sees QK^T and AV)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    text = _spec(c, heads, patch, size, "" if bias else ", qkv_bias: false")
    model = archcompiler.build(text, seed=0).eval()
    op = model.get_submodule("attn")
    reference = Attention(c, heads, qkv_bias=bias).eval()
    reference.load_state_dict(op.state_dict(), strict=True)
    x = torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(op(x), _reference(x, reference, patch), rtol=1e-5, atol=1e-6)
    report = archcompiler.analyze(text)
    row = next(r for r in report["rows"] if r["name"] == "attn")
    assert tuple(row["output"]) == (c, size, size)
    assert sum(p.numel() for p in op.parameters()) == 4 * c * c + (4 if bias else 1) * c
    assert report["total"]["params"] == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
        model(torch.randn(1, 3, size, size))
    assert counted.get_total_flops() == report["total"]["flops"]


@pytest.mark.parametrize("c, heads, patch, size", [(16, 4, 2, 8), (24, 1, 4, 16)], ids=["4-heads", "1-head-patch-4"])
def test_memory_matches_a_measurement(c, heads, patch, size):
    """The inference peak exactly (at the attention: the unfolded copy, the projection, the attention's output
    and log-sum-exp); a training step within 1% (what autograd keeps: not the op's input)."""
    assert_memory_measured(_spec(c, heads, patch, size), infer_batch=2, train_batch=8 if size > 8 else None)


def test_dropout_on_the_attention_weights_is_timms():
    model = archcompiler.build(_spec(extra=", dropout: 0.25"), seed=0).train()
    op = model.get_submodule("attn")
    reference = Attention(16, 4, attn_drop=0.25).train()
    reference.load_state_dict(op.state_dict(), strict=True)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = op(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, _reference(x, reference, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size, heads, why", [(7, 4, "does not tile the map"), (8, 3, "does not divide the 16")])
def test_a_map_the_patch_does_not_tile_or_heads_that_do_not_divide_are_refused(size, heads, why):
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(_spec(16, heads, 2, size))
    assert why in str(info.value)


def test_the_generated_module_is_standalone_and_scripts():
    built = archcompiler.build(_spec(), seed=0).eval()
    assert "class PatchAttention(nn.Module):" in built.code and "archcompiler" not in built.code
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(built)(x), built(x))


# ----------------------------------------------------------------------------- archc import


def test_archc_import_reads_a_mobilevit_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process: the block's `if` on sizes is taken as at this input (the second
    block interpolates to 6 x 6 and back), its unfold and fold are the map, its attention patch_attention; the
    spec is verified against the module by archc, and again here."""
    (tmp_path / "timm_like.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                           "from test_mobilevit import tiny_mobilevit  # noqa: E402,F401\n")
    done = run_archc("import", "timm_like.py:tiny_mobilevit", "-o", "mvit.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "mvit.yaml").read_text()
    assert text.count("op: patch_attention, heads: heads, patch: 2") == 1      # one block, three uses
    assert "op: interpolate, size: 6, mode: bilinear" in text and "op: interpolate, size: 5, mode: bilinear" in text
    assert "over: channels" in text
    assert_imports_back(tiny_mobilevit(), text)


def test_archcs_own_built_moduleassert_imports_back():
    """A module archc built (its PatchAttention, a leaf of the trace) imports to a spec that computes the same."""
    built = archcompiler.build(_spec(12, 3, 4, 8, ", qkv_bias: false, dropout: 0.1"), seed=0).eval()
    text = archcompiler.import_module(built, name="again")
    assert "op: patch_attention, heads: 3, patch: 4, qkv_bias: false, dropout: 0.1" in text
    assert_imports_back(built, text)


def test_what_patch_attention_cannot_express_is_refused_where_it_is():
    """timm's Attention on the patches is refused as self_attention refuses it (qk_norm here), with its place."""
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(tiny_mobilevit(qk_norm=True))
    message = str(info.value)
    assert "stage1.transformer.0.attn (Attention)" in message and "qk_norm" in message


def test_a_forward_that_branches_on_values_is_still_refused():
    """Sizes are numbers at the given input; a branch on a tensor's values is not, and stays refused."""

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.shape[-1] > 4 and x.sum() > 0:
                return self.conv(x)
            return self.conv(-x)

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Gate(), input=(3, 8, 8))
    assert "branches on the input" in str(info.value)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
