"""timm's CaiT (issue #32): talking-heads attention (``talking_heads``), class attention (``class_attention``),
the class token on its own (``learned_token``) and sequences concatenated along the tokens (``concat``).

timm is no dependency: the reference is a hand-written copy of timm's CaiT modules (timm/models/cait.py:
TalkingHeadAttn, ClassAttn, LayerScaleBlock, LayerScaleBlockClassAttn and Cait's forward, the same
attributes and forward), the two attention classes claiming timm's module path, as the importer reads them
by package, in a small model. timm's own cait_xxs24_224 is measured in a side environment
(benchmarks/import_timm.py)."""

from __future__ import annotations

import inspect
import sys

import pytest
from conftest import assert_memory_measured, run_archc
from timm_like import Mlp

import archcompiler
from archcompiler import BackendError, GraphError

torch = pytest.importorskip("torch")
nn = torch.nn

# ----------------------------------------------------------------------------- timm's modules, by hand (MODULE)


class TalkingHeadAttn(nn.Module):
    """timm.models.cait.TalkingHeadAttn (timm 1.0): the same attributes, the same forward."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_l = nn.Linear(num_heads, num_heads)
        self.proj_w = nn.Linear(num_heads, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = attn.softmax(dim=-1)
        attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        return self.proj_drop(x)


class ClassAttn(nn.Module):
    """timm.models.cait.ClassAttn (timm 1.0), its fused path: the same attributes, the same forward."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        q = self.q(x[:, 0]).unsqueeze(1).reshape(B, 1, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        x_cls = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x_cls = x_cls.transpose(1, 2).reshape(B, 1, C)
        x_cls = self.proj(x_cls)
        return self.proj_drop(x_cls)


TalkingHeadAttn.__module__ = ClassAttn.__module__ = "timm.models.cait"     # where timm's classes live: leaves


class LayerScaleBlock(nn.Module):
    def __init__(self, dim, heads, **attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TalkingHeadAttn(dim, heads, qkv_bias=True, **attention)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma_1 = nn.Parameter(1e-4 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-4 * torch.ones(dim))

    def forward(self, x):
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class LayerScaleBlockClassAttn(nn.Module):
    def __init__(self, dim, heads, **attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttn(dim, heads, qkv_bias=True, **attention)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma_1 = nn.Parameter(1e-4 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(1e-4 * torch.ones(dim))

    def forward(self, x, x_cls):
        u = torch.cat((x_cls, x), dim=1)
        x_cls = x_cls + self.drop_path(self.gamma_1 * self.attn(self.norm1(u)))
        return x_cls + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x_cls)))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Cait(nn.Module):
    """timm's Cait, small: 32x32 images in 4x4 patches (64 tokens), two talking-heads blocks, the class token
    through two class-attention blocks, prepended to the patches for the final norm, the head on token 0."""

    INPUT_SHAPE = (3, 32, 32)

    def __init__(self, dim=32, heads=4, depth=2, classes=10, attention=None, token_attention=None):
        super().__init__()
        self.patch_embed = PatchEmbed(4, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 64, dim))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*[LayerScaleBlock(dim, heads, **(attention or {})) for _ in range(depth)])
        self.blocks_token_only = nn.ModuleList([LayerScaleBlockClassAttn(dim, heads, **(token_attention or {}))
                                                for _ in range(2)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, classes)

    def forward_cls(self, x):
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        for blk in self.blocks_token_only:
            cls_tokens = blk(x, cls_tokens)
        return torch.cat((cls_tokens, x), dim=1)

    def forward(self, x):
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        x = self.norm(self.forward_cls(self.blocks(x)))
        return self.head(self.head_drop(x[:, 0]))


def cait(**kwargs) -> Cait:
    """The callable `archc import` runs: seeded, every parameter drawn (the layer scales far from 1e-4, so that
    every block counts in the logits)."""
    torch.manual_seed(0)
    model = Cait(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- end of MODULE

SPEC = """\
name: tiny_cait
input: [3, 32, 32]
blocks:
  block:
    layers:
      - {name: norm1, op: layer_norm, eps: 1.0e-6}
      - {name: attn, op: talking_heads, heads: 4}
      - {name: gamma_1, op: layer_scale}
      - {name: add, op: add, inputs: [gamma_1, in]}
      - {name: norm2, op: layer_norm, eps: 1.0e-6}
      - {name: mlp.fc1, op: linear, out: 128, over: tokens, act: gelu}
      - {name: mlp.fc2, op: linear, out: 32, over: tokens}
      - {name: gamma_2, op: layer_scale}
      - {name: add_1, op: add, inputs: [add, gamma_2]}
layers:
  - {name: patch_embed.proj, op: patch_embed, out: 32, patch: 4}
  - {name: pos_embed, op: pos_embedding}
  - table:
      use: block
      columns: [name, repeat]
      rows:
        - [blocks, 2]
  - {name: cls_token, op: learned_token}
  - {name: blocks_token_only.0.cat, op: concat, inputs: [cls_token, blocks]}
  - {name: blocks_token_only.0.norm1, op: layer_norm, eps: 1.0e-6}
  - {name: blocks_token_only.0.attn, op: class_attention, heads: 4}
  - {name: blocks_token_only.0.gamma_1, op: layer_scale}
  - {name: blocks_token_only.0.add, op: add, inputs: [cls_token, blocks_token_only.0.gamma_1]}
  - {name: blocks_token_only.0.norm2, op: layer_norm, eps: 1.0e-6}
  - {name: blocks_token_only.0.mlp.fc1, op: linear, out: 128, over: tokens, act: gelu}
  - {name: blocks_token_only.0.mlp.fc2, op: linear, out: 32, over: tokens}
  - {name: blocks_token_only.0.gamma_2, op: layer_scale}
  - {name: blocks_token_only.0.add_1, op: add, inputs: [blocks_token_only.0.add, blocks_token_only.0.gamma_2]}
  - {name: blocks_token_only.1.cat, op: concat, inputs: [blocks_token_only.0.add_1, blocks]}
  - {name: blocks_token_only.1.norm1, op: layer_norm, eps: 1.0e-6}
  - {name: blocks_token_only.1.attn, op: class_attention, heads: 4}
  - {name: blocks_token_only.1.gamma_1, op: layer_scale}
  - {name: blocks_token_only.1.add, op: add, inputs: [blocks_token_only.0.add_1, blocks_token_only.1.gamma_1]}
  - {name: blocks_token_only.1.norm2, op: layer_norm, eps: 1.0e-6}
  - {name: blocks_token_only.1.mlp.fc1, op: linear, out: 128, over: tokens, act: gelu}
  - {name: blocks_token_only.1.mlp.fc2, op: linear, out: 32, over: tokens}
  - {name: blocks_token_only.1.gamma_2, op: layer_scale}
  - {name: blocks_token_only.1.add_1, op: add, inputs: [blocks_token_only.1.add, blocks_token_only.1.gamma_2]}
  - {name: cat, op: concat, inputs: [blocks_token_only.1.add_1, blocks]}
  - {name: norm, op: layer_norm, eps: 1.0e-6}
  - {name: select_token, op: select_token}
  - {name: head, op: linear, out: 10}
"""


def _load(text: str = SPEC):
    return archcompiler.load_spec(text)


def test_the_hand_written_spec_is_timms_cait_keys_logits_params_and_flops():
    """Built, the spec has the reference's state_dict keys (each attention's in order), loads its weights strictly and gives its
    logits; its parameters are the reference's and its FLOPs what FlopCounterMode counts in the reference (the
    math backend: it sees the class attention's two products)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    spec = _load()
    built = archcompiler.build(spec, seed=0).eval()
    reference = cait()
    assert sorted(built.state_dict()) == sorted(reference.state_dict())      # (timm makes cls_token first)
    assert list(built.get_submodule("blocks.0.attn").state_dict()) == list(reference.blocks[0].attn.state_dict())
    built.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-5)
    report = archcompiler.analyze(spec)
    assert report["total"]["params"] == sum(p.numel() for p in reference.parameters())
    d, h, s = 32, 4, 64
    assert report["by_op"]["talking_heads"]["params"] == 2 * (4 * d * d + 4 * d + 2 * (h * h + h))
    assert report["by_op"]["class_attention"]["params"] == 2 * (4 * d * d + 4 * d)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["cls_token"]["output"] == [1, d] and rows["blocks_token_only.0.attn"]["output"] == [1, d]
    assert rows["cat"]["output"] == [s + 1, d]
    for model in (reference, built):        # (with autograd: torch's module tracker needs the expanded token's)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
            model(x[:1])
        assert counted.get_total_flops() == report["total"]["flops"]


def test_the_ops_alone_agree_with_torch_in_random_small_configurations():
    """As tests/test_ops_vs_torch.py checks every token op: the shape, parameters and 2 x MACs against
    FlopCounterMode (autograd on, the math backend), with and without the qkv bias."""
    import random

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    r = random.Random(7)
    for op in ("talking_heads", "class_attention") * 3:
        heads, patch = r.choice([1, 2, 3]), r.choice([2, 4])
        dim, size, bias = 6 * r.randint(1, 3), patch * r.randint(2, 4), r.choice(["true", "false"])
        text = (f"name: t\ninput: [3, {size}, {size}]\nlayers:\n  - {{name: p, op: patch_embed, out: {dim}, "
                f"patch: {patch}}}\n  - {{name: a, op: {op}, heads: {heads}, qkv_bias: {bias}}}\n")
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            y = model(torch.randn(2, 3, size, size))
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]), text
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == 2 * report["total"]["flops"], text


@pytest.mark.parametrize("batch", [1, 2])
def test_memory_matches_a_measurement(batch):
    """The inference peak exactly (at a batch of one the products and the mixes of the heads read views, over
    one contiguous copies); a training step within 1% (its peak at the class attention's backward)."""
    assert_memory_measured(SPEC, infer_batch=batch, train_batch=None if batch == 1 else 16)


@pytest.mark.parametrize("op", ["talking_heads", "class_attention"])
def test_each_attention_alone_has_its_inference_peak(op):
    """After a LayerNorm, as in CaiT's blocks (each op's input contiguous), over one head and several, at
    batches of one and three."""
    for heads, dim in ((1, 8), (3, 24)):
        text = (f"name: t\ninput: [3, 16, 16]\nlayers:\n  - {{name: p, op: patch_embed, out: {dim}, patch: 4}}\n"
                f"  - {{name: n, op: layer_norm}}\n  - {{name: a, op: {op}, heads: {heads}}}\n"
                "  - {name: s, op: select_token}\n  - {name: head, op: linear, out: 3}\n")
        for batch in (1, 3):
            assert_memory_measured(text, infer_batch=batch, train_batch=None)


def test_one_head_and_no_qkv_bias_keep_the_layout_and_the_memory():
    text = SPEC.replace("heads: 4}", "heads: 1, qkv_bias: false}")
    built = archcompiler.build(_load(text), seed=0)
    assert built.get_submodule("blocks.0.attn").qkv.bias is None
    assert built.get_submodule("blocks_token_only.0.attn").k.bias is None
    assert_memory_measured(text, infer_batch=3, train_batch=None)


def test_dropout_on_the_attention_weights_is_timms():
    """In training, the same generator state gives the same masks: the mixed weights' (talking heads) and
    scaled_dot_product_attention's (class attention)."""
    text = SPEC.replace("heads: 4}", "heads: 4, dropout: 0.25}")
    built = archcompiler.build(_load(text), seed=0).train()
    reference = cait(attention={"attn_drop": 0.25})
    reference.train()
    built.load_state_dict(reference.state_dict(), strict=True)
    for i in range(2):                  # the reference's class attention has none
        built.get_submodule(f"blocks_token_only.{i}.attn").dropout = 0.0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = built(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, reference(x), rtol=1e-5, atol=1e-5)


def test_shapes_the_ops_cannot_take_are_refused_at_the_layer():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("talking_heads, heads: 4", "talking_heads, heads: 5"))
    assert "blocks" in str(info.value) and "heads=5 does not divide" in str(info.value)
    text = ("name: t\ninput: [3, 8, 8]\nlayers:\n  - {name: p, op: patch_embed, out: 8, patch: 4}\n"
            "  - {name: w, op: linear, over: tokens, out: 4}\n  - {name: c, op: concat, inputs: [p, w]}\n")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    assert "concat needs sequences of the same dimension" in str(info.value)


# ----------------------------------------------------------------------------- archc import


def test_the_model_imports_exactly_through_the_command(tmp_path):
    """`archc import` in a fresh process: verified by archc, and again here (built from the written file, the
    module's state_dict loaded strictly, the same logits)."""
    source = inspect.getsource(sys.modules[__name__])
    module = source.split("# " + "-" * 77 + " timm's modules, by hand (MODULE)", 1)[1].split("# " + "-" * 77, 1)[0]
    (tmp_path / "caitlike.py").write_text("import torch\nfrom torch import nn\n" + inspect.getsource(Mlp) + module)
    done = run_archc("import", "caitlike.py:cait", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    for line in ("{name: attn, op: talking_heads, heads: 4}", "{name: cls_token, op: learned_token}",
                 "op: class_attention, heads: 4}", "{name: blocks_token_only.0.concat, op: concat, inputs: "
                 "[cls_token, blocks]}", "op: add, inputs: [cls_token, blocks_token_only.0.gamma_1]}"):
        assert line in text, text
    model = cait()
    built = archcompiler.build(archcompiler.load_spec(tmp_path / "net.yaml")).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(built(x), model(x), rtol=1e-5, atol=1e-5)


def test_archcs_own_built_module_imports_back_to_the_same_ops():
    built = archcompiler.build(_load(SPEC.replace("heads: 4}", "heads: 4, qkv_bias: false}")), seed=0).eval()
    text = archcompiler.import_module(built, name="again")
    assert text.count("op: talking_heads, heads: 4, qkv_bias: false}") == 1       # the block, used twice
    assert text.count("op: class_attention, heads: 4, qkv_bias: false}") >= 1 and "op: learned_token" in text
    spec = archcompiler.load_spec(text)
    rebuilt = archcompiler.build(spec).eval()
    rebuilt.load_state_dict(built.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), built(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, where, why", [
    ({"attention": {"proj_drop": 0.1}}, "blocks.0.attn (TalkingHeadAttn)", "proj_drop"),
    ({"token_attention": {"proj_drop": 0.1}}, "blocks_token_only.0.attn (ClassAttn)", "proj_drop"),
], ids=["talking-heads-proj-drop", "class-attention-proj-drop"])
def test_what_the_ops_cannot_express_is_refused_saying_where_and_why(kwargs, where, why):
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(cait(**kwargs))
    message = info.value.errors[0].format()
    assert where in message and why in message


def test_another_scale_and_a_token_of_another_width_are_refused():
    model = cait()
    model.blocks[1].attn.scale = 0.5
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model)
    assert "blocks.1.attn (TalkingHeadAttn)" in info.value.errors[0].format() and "scaled by 0.5" in str(info.value)

    class Two(nn.Module):
        """A (1, 2, D) parameter expanded and read twice: no learned_token (one token)."""

        INPUT_SHAPE = (3, 8, 8)

        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 4, 4, 4)
            self.tokens = nn.Parameter(torch.randn(1, 2, 4))

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            t = self.tokens.expand(x.shape[0], -1, -1)
            return (torch.cat((t, x), dim=1)[:, 0] + t[:, 1])

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Two(), name="two")
    assert "tokens" in info.value.errors[0].format() and "(1, 1, D) token" in str(info.value)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
