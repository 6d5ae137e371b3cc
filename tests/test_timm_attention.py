"""timm's ViT and DeiT attention (issue #32): ``self_attention`` with ``layout: timm`` is laid out and
computed as ``timm.layers.Attention`` (``qkv``, ``proj``; runtime.py's TokenAttention), and ``archc import``
reads timm's module as one layer.

timm is no dependency: the reference here is a hand-written copy of timm's ``Attention`` (the same
attribute names and forward) whose class claims timm's module path, as the importer reads a class by
name and package; a small ViT around it (timm's PatchEmbed, class token, position embedding, Block of
norm1 / attn / norm2 / Mlp, final norm and head on the class token). The check against timm's own
vit_tiny_patch16_224 and deit_tiny_patch16_224 runs in a side environment with timm installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc
from timm_like import Mlp

import archcompiler
from archcompiler import BackendError, SpecError
from archcompiler.ops.self_attention import TIMM

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- timm's modules, by hand


class Attention(nn.Module):
    """timm.layers.Attention (timm 1.0), line for line: the same attributes, the same forward."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_norm=False, scale_norm=False, proj_bias=True,
                 attn_drop=0.0, proj_drop=0.0, norm_layer=None):
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dim = dim
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = norm_layer(dim) if scale_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, attn_mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn + attn_mask
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


Attention.__module__ = "timm.layers.attention"      # where timm's class lives: the importer reads it as a leaf


class Block(nn.Module):
    def __init__(self, dim, heads, mlp, qkv_bias=True, **attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, **attention)
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp)
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x, attn_mask=None):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class TinyViT(nn.Module):
    """timm's VisionTransformer, small: 32x32 images in 4x4 patches (64 tokens and the class token)."""

    INPUT_SHAPE = (3, 32, 32)

    def __init__(self, dim=32, depth=2, heads=4, mlp=64, classes=10, qkv_bias=True, **attention):
        super().__init__()
        self.patch_embed = PatchEmbed(4, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 65, dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp, qkv_bias, **attention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x = self.norm(self.blocks(self.norm_pre(x)))
        return self.head(self.head_drop(self.fc_norm(x[:, 0])))


def tiny_vit(**kwargs) -> TinyViT:
    """The callable `archc import` runs (seeded: the same weights in every process)."""
    torch.manual_seed(0)
    return TinyViT(**kwargs).eval()


# ----------------------------------------------------------------------------- the spec

SPEC = """\
name: tiny_timm_vit
input: [3, 32, 32]
params: {dim: 32, heads: 4, mlp: 64, depth: 2, qkv_bias: true}
blocks:
  block:
    args: [dim, heads, mlp]
    layers:
      - {name: norm1, op: layer_norm, eps: 1.0e-6}
      - {name: attn, op: self_attention, heads: heads, layout: timm, qkv_bias: qkv_bias}
      - {name: add_1, op: add, inputs: [attn, in]}
      - {name: norm2, op: layer_norm, eps: 1.0e-6}
      - {name: fc1, op: linear, over: tokens, out: mlp, act: gelu}
      - {name: fc2, op: linear, over: tokens, out: dim}
      - {name: add_2, op: add, inputs: [fc2, add_1]}
layers:
  - {name: patch_embed, op: patch_embed, out: dim, patch: 4}
  - {name: cls_token, op: class_token}
  - {name: pos_embed, op: pos_embedding}
  - table:
      use: block
      columns: [name, dim, heads, mlp, repeat]
      rows:
        - [blocks, dim, heads, mlp, depth]
  - {name: norm, op: layer_norm, eps: 1.0e-6}
  - {name: cls, op: select_token, index: 0}
  - {name: head, op: linear, out: 10}
torch:
  rename:
    - ['^patch_embed$', 'patch_embed/proj']
    - ['/fc1$', '/mlp/fc1']
    - ['/fc2$', '/mlp/fc2']
"""


def _spec(overrides: list[str] | None = None):
    return archcompiler.load_spec(SPEC, overrides)


def test_the_timm_layout_has_timms_keys_and_computes_timms_logits_params_and_flops():
    """Built with layout: timm, the spec has the reference's state_dict (the same keys, in order), loads its
    weights strictly and gives its logits; archc's parameters are the module's (qkv 3D^2 + 3D, proj D^2 + D)
    and its FLOPs what FlopCounterMode counts in the reference (the projections and scaled_dot_product_attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    spec = _spec()
    built = archcompiler.build(spec, seed=0).eval()
    reference = tiny_vit()
    assert list(built.state_dict()) == list(reference.state_dict())
    built.load_state_dict(reference.state_dict(), strict=True)
    assert type(built.get_submodule("blocks.0.attn")).__name__ == "TokenAttention"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-6)
    report = archcompiler.analyze(spec)
    d = 32
    attention = report["by_op"][TIMM]
    assert attention["count"] == 2 and attention["params"] == 2 * (4 * d * d + 4 * d)
    assert report["total"]["params"] == sum(p.numel() for p in reference.parameters())
    for model in (reference, built):        # the math backend: the counter sees QK^T and AV (not CPU's fused kernel)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
            model(x[:1])
        assert counted.get_total_flops() == report["total"]["flops"]


def test_without_the_qkv_bias_and_with_dropout_on_the_attention_weights():
    spec = _spec(["qkv_bias=false"])
    built = archcompiler.build(spec, seed=0)
    reference = tiny_vit(qkv_bias=False, attn_drop=0.25)
    assert built.get_submodule("blocks.0.attn").qkv.bias is None
    built.load_state_dict(reference.state_dict(), strict=True)
    d = 32
    assert archcompiler.analyze(spec)["total"]["params"] == sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in built.get_submodule("blocks.0.attn").parameters()) == 4 * d * d + d
    # dropout on the attention's weights in training, as timm's (the same generator state: the same mask)
    spec = archcompiler.load_spec(SPEC.replace("layout: timm,", "layout: timm, dropout: 0.25,"))
    built = archcompiler.build(spec, seed=0).train()
    reference = tiny_vit(attn_drop=0.25).train()
    built.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = built(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, reference(x), rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    assert not torch.allclose(a, built.eval()(x))


def test_the_op_alone_agrees_with_torch_in_random_small_configurations():
    """As tests/test_ops_vs_torch.py checks every token op: the shape, parameters and 2 x MACs against
    FlopCounterMode (autograd on, the math backend: it sees QK^T and AV)."""
    import random

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    r = random.Random(32)
    for _ in range(4):
        heads, patch = r.choice([1, 2, 4]), r.choice([2, 4])
        dim, size, bias = 4 * r.randint(1, 4), patch * r.randint(2, 4), r.choice(["true", "false"])
        text = (f"name: t\ninput: [3, {size}, {size}]\nlayers:\n  - {{name: p, op: patch_embed, out: {dim}, patch: {patch}}}\n"
                f"  - {{name: a, op: self_attention, heads: {heads}, layout: timm, qkv_bias: {bias}}}\n")
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            y = model(torch.randn(2, 3, size, size))
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]), text
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == 2 * report["total"]["flops"], text


def test_qkv_bias_false_needs_the_timm_layout():
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(SPEC.replace("layout: timm, ", ""), ["qkv_bias=false"])
    assert "needs layout: timm" in str(info.value)


@pytest.mark.parametrize("overrides", [["depth=2"], ["heads=1", "qkv_bias=false", "dim=24", "mlp=48"]],
                         ids=["4-heads", "1-head-no-bias"])
def test_memory_matches_a_measurement(overrides):
    """The inference peak exactly (at the attention: its qkv projection, the output and log-sum-exp per head
    and token); a training step within 1% (it keeps what nn.MultiheadAttention's path keeps)."""
    assert_memory_measured(_spec(overrides), infer_batch=2, optimizer="adam")


@pytest.mark.parametrize("overrides", [["depth=2", "heads=1"], ["depth=1", "dim=48", "heads=3"]],
                         ids=["1-head", "3-heads"])
def test_the_torch_layouts_inference_peak_with_an_odd_number_of_heads(overrides):
    """nn.MultiheadAttention takes its fused path only for an even number of heads (ViT-Tiny and DeiT-Tiny
    have 3): with an odd number its projections and their copies are transient memory archc counts."""
    assert_memory_measured(archcompiler.load_spec("vit-tiny", overrides=overrides), infer_batch=3, train_batch=None)


def test_the_generated_module_is_standalone_and_scripts():
    """TokenAttention's text is copied into the generated module, which imports only torch; TorchScript
    compiles it; the torch layout's modules do not carry it."""
    built = archcompiler.build(_spec(), seed=0).eval()
    assert "class TokenAttention(nn.Module):" in built.code and "archcompiler" not in built.code
    torch_layout = SPEC.replace(", layout: timm, qkv_bias: qkv_bias", "").replace(", qkv_bias: true", "")
    plain = archcompiler.build(archcompiler.load_spec(torch_layout))
    assert "TokenAttention" not in plain.code and "nn.MultiheadAttention(32, 4" in plain.code
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(built)(x), built(x))


def test_it_is_drawn_with_its_layout():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    assert "4 heads (timm)" in build_dot(_spec()).source
    assert "no qkv bias" in build_dot(_spec(["qkv_bias=false"])).source


# ----------------------------------------------------------------------------- archc import


def _imports_back(model: nn.Module, text: str) -> None:
    assert_imports_back(model, text, batch=1, atol=1e-6)

def test_timms_attention_imports_as_self_attention_in_the_timm_layout():
    model = tiny_vit()
    text = archcompiler.import_module(model, name="tiny_timm_vit")
    assert "layout: timm" in text and "op: self_attention" in text and "qkv_bias" not in text
    _imports_back(model, text)


def test_timms_attention_without_qkv_bias_and_with_attention_dropout():
    model = tiny_vit(qkv_bias=False, attn_drop=0.1)
    text = archcompiler.import_module(model)
    assert "qkv_bias: false" in text and "dropout: 0.1" in text and "layout: timm" in text
    _imports_back(model, text)


def test_the_unfused_path_is_the_same_computation():
    model = tiny_vit()
    for block in model.blocks:
        block.attn.fused_attn = False
    _imports_back(model, archcompiler.import_module(model))


@pytest.mark.parametrize("attention, why", [
    ({"qk_norm": True, "norm_layer": nn.LayerNorm}, "qk_norm"),
    ({"scale_norm": True, "norm_layer": nn.LayerNorm}, "scale_norm"),
    ({"proj_drop": 0.1}, "proj_drop"),
    ({"proj_bias": False}, "without the proj bias"),
], ids=["qk_norm", "scale_norm", "proj_drop", "no-proj-bias"])
def test_what_archcs_attention_cannot_express_is_refused(attention, why):
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(tiny_vit(**attention))
    message = str(info.value)
    assert "blocks.0.attn" in message and "Attention" in message and why in message


def test_an_attention_class_outside_timm_is_not_read_as_timms():
    """A class named Attention elsewhere is traced through, not taken for timm's by its name."""

    class Mine(Attention):
        pass

    Mine.__module__ = "my_models.attention"
    model = tiny_vit()
    for block in model.blocks:
        mine = Mine(32, 4, qkv_bias=True)
        mine.load_state_dict(block.attn.state_dict())
        block.attn = mine
    with pytest.raises(BackendError) as info:      # traced through: its reshape is no archc op
        archcompiler.import_module(model)
    assert "blocks.0.attn (Mine)" in str(info.value) and ".reshape()" in str(info.value)


def test_archcs_own_built_module_imports_back():
    """A module archc built with layout: timm (its TokenAttention, a leaf of the trace) imports to the same spec."""
    spec = _spec(["qkv_bias=false"])
    built = archcompiler.build(spec, seed=0).eval()
    text = archcompiler.import_module(built, name="again")
    assert "layout: timm" in text and "qkv_bias: false" in text
    _imports_back(built, text)


def test_archc_import_reads_a_timm_vit_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process: `archc import file.py:callable` (the file imports timm's
    classes from this test module), the spec it writes verified against the module."""
    (tmp_path / "timm_like.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                           "from test_timm_attention import tiny_vit  # noqa: E402,F401\n")
    done = run_archc("import", "timm_like.py:tiny_vit", "--arg", "depth=3", "-o", "vit.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "vit.yaml").read_text()
    assert "layout: timm" in text
    _imports_back(tiny_vit(depth=3), text)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
