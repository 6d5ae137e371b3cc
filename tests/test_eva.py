"""EVA-02 (issue #32): ``rope_attention`` (multi-head attention with rotary position embeddings over a class
token and a grid of patches, laid out as timm's ``EvaAttention``), ``swiglu`` (a gated MLP, laid out as
timm's ``GluMlp`` or ``SwiGLU``) and ``token_slice`` (``x[:, 1:]`` before the average pool), and a
``layer_norm`` of the pooled vector (timm's ``fc_norm``).

timm is no dependency: the references here are hand-written copies of timm's ``EvaAttention``,
``RotaryEmbeddingCat`` (its cached table for a fixed grid), ``GluMlp`` and ``SwiGLU`` (the same attribute
names and forward) whose classes claim timm's module paths, as the importer reads a class by name and
package, in a small EVA-02 around them. The check against timm's own eva02_tiny_patch14_224 runs in a side
environment with timm installed (benchmarks/import_timm.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import BackendError, GraphError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- timm's modules, by hand


def rope_table(dim, shape, ref=None, temperature=10000.0, offset=0.0, indexing="ij", half=False):
    """timm's build_rotary_pos_embed for the index grid (in_pixels=False), sine and cosine concatenated."""
    bands = dim // 4
    freqs = 1.0 / (temperature ** (torch.arange(0, bands, dtype=torch.int64).to(torch.float32) / bands))
    shape, ref = list(shape), list(ref) if ref is not None else None
    if indexing == "xy":
        shape, ref = shape[::-1], ref[::-1] if ref is not None else None
    t = [torch.arange(s, dtype=torch.int64).to(torch.float32) + offset for s in shape]
    if ref is not None:
        t = [x / f * r for x, f, r in zip(t, shape, ref)]
    pos = torch.stack(torch.meshgrid(t, indexing=indexing), dim=-1).unsqueeze(-1) * freqs
    sin, cos = (v.flatten(-2).flatten(0, -2) for v in (pos.sin(), pos.cos()))
    expand = (lambda v: torch.cat([v, v], -1)) if half else (lambda v: v.repeat_interleave(2, -1))
    return torch.cat([expand(sin), expand(cos)], -1)


class RotaryEmbeddingCat(nn.Module):
    """timm.layers.RotaryEmbeddingCat for a fixed grid: its table a buffer outside the state_dict."""

    def __init__(self, dim, feat_shape, ref_feat_shape=None, temperature=10000.0, grid_offset=0.0,
                 grid_indexing="ij", rotate_half=False, in_pixels=False):
        super().__init__()
        self.dim, self.feat_shape, self.ref_feat_shape = dim, feat_shape, ref_feat_shape
        self.temperature, self.grid_offset, self.grid_indexing = temperature, grid_offset, grid_indexing
        self.rotate_half, self.in_pixels, self.grid_type, self.aug_active = rotate_half, in_pixels, "index", False
        table = rope_table(dim, feat_shape, ref_feat_shape, temperature, grid_offset, grid_indexing, rotate_half)
        if in_pixels:          # another table (timm's pixel bands): what archc does not make
            table = table * 0.5
        self.register_buffer("pos_embed", table, persistent=False)

    def get_embed(self):
        return self.pos_embed


RotaryEmbeddingCat.__module__ = "timm.layers.pos_embed_sincos"


def rot(x):
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def rope_rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rot_embed_cat(x, emb, half=False):
    sin_emb, cos_emb = emb.chunk(2, -1)
    return x * cos_emb + (rope_rotate_half(x) if half else rot(x)) * sin_emb


class EvaAttention(nn.Module):
    """timm.models.eva.EvaAttention (timm 1.0), line for line where EVA-02 goes: fused qkv, q_bias and
    v_bias with k's zero, the rotary table its caller passes applied after the prefix tokens."""

    def __init__(self, dim, num_heads=8, qkv_bias=True, qkv_fused=True, num_prefix_tokens=1, attn_drop=0.0,
                 norm_layer=None, scale_norm=False, rotate_half=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.fused_attn = True
        self.qkv_bias_separate = False
        self.rotate_half = rotate_half
        if qkv_fused:
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            self.q_proj = self.k_proj = self.v_proj = None
            if qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
                self.v_bias = nn.Parameter(torch.zeros(dim))
            else:
                self.q_bias = self.k_bias = self.v_bias = None
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=False)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.qkv = None
            self.q_bias = self.k_bias = self.v_bias = None
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = norm_layer(dim) if scale_norm else nn.Identity()
        self.gate = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x, rope=None, attn_mask=None, is_causal=False):
        B, N, C = x.shape
        if self.qkv is not None:
            if self.q_bias is None:
                qkv = self.qkv(x)
            else:
                qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
                qkv = F.linear(x, weight=self.qkv.weight, bias=qkv_bias)
            qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            q = self.q_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
            k = self.k_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
            v = self.v_proj(x).reshape(B, N, self.num_heads, -1).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            npt, half = self.num_prefix_tokens, self.rotate_half
            q = torch.cat([q[:, :, :npt, :], apply_rot_embed_cat(q[:, :, npt:, :], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :npt, :], apply_rot_embed_cat(k[:, :, npt:, :], rope, half=half)], dim=2).type_as(v)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))


EvaAttention.__module__ = "timm.models.eva"


class GluMlp(nn.Module):
    """timm.layers.GluMlp (SwiGLUPacked: act SiLU, gate first)."""

    def __init__(self, in_features, hidden_features, act_layer=nn.SiLU, gate_last=False, drop=0.0):
        super().__init__()
        self.chunk_dim, self.gate_last = -1, gate_last
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features // 2, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        x1, x2 = self.fc1(x).chunk(2, dim=self.chunk_dim)
        x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
        return self.drop2(self.fc2(self.norm(self.drop1(x))))


class SwiGLU(nn.Module):
    """timm.layers.SwiGLU with a LayerNorm inside (EVA-02's scale_mlp)."""

    def __init__(self, in_features, hidden_features, norm_layer=None):
        super().__init__()
        self.fc1_g = nn.Linear(in_features, hidden_features)
        self.fc1_x = nn.Linear(in_features, hidden_features)
        self.act = nn.SiLU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        x = self.act(self.fc1_g(x)) * self.fc1_x(x)
        return self.drop2(self.fc2(self.norm(self.drop1(x))))


GluMlp.__module__ = SwiGLU.__module__ = "timm.layers.mlp"


class LayerNorm(nn.LayerNorm):
    """timm.layers.LayerNorm: F.layer_norm in its own forward, eps 1e-6."""

    def __init__(self, c, eps=1e-6):
        super().__init__(c, eps=eps)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class EvaBlock(nn.Module):
    def __init__(self, dim, heads, hidden, scale_mlp=False, scale_attn_inner=False, rotate_half=False, **attention):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = EvaAttention(dim, heads, norm_layer=LayerNorm, scale_norm=scale_attn_inner,
                                 rotate_half=rotate_half, **attention)
        self.gamma_1 = None
        self.drop_path1 = nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = SwiGLU(dim, hidden, norm_layer=LayerNorm) if scale_mlp else GluMlp(dim, 2 * hidden)
        self.gamma_2 = None
        self.drop_path2 = nn.Identity()

    def forward(self, x, rope=None, attn_mask=None, is_causal=False):
        x = x + self.drop_path1(self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask, is_causal=is_causal))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class TinyEva(nn.Module):
    """timm's Eva (EVA-02), small: 32x32 images in 8x8 patches (a 4 x 4 grid and the class token), rotary
    embeddings rescaled onto a 3 x 3 reference grid, the average pool over the patches, fc_norm and head."""

    INPUT_SHAPE = (3, 32, 32)

    def __init__(self, dim=32, depth=2, heads=2, hidden=40, classes=10, rope=None, **block):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 8, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        self.rope = RotaryEmbeddingCat(dim // heads, [4, 4], **({"ref_feat_shape": [3, 3]} if rope is None else rope),
                                       rotate_half=block.get("rotate_half", False))
        self.norm_pre = nn.Identity()
        self.blocks = nn.ModuleList([EvaBlock(dim, heads, hidden, **block) for _ in range(depth)])
        self.norm = nn.Identity()
        self.fc_norm = LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.pos_embed)
        rot_pos_embed = self.rope.get_embed()
        x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x, rope=rot_pos_embed)
        x = self.norm(x)
        return self.head(self.fc_norm(x[:, 1:].mean(dim=1)))


def tiny_eva(**kwargs) -> TinyEva:
    """The callable `archc import` runs (seeded, trained-like: the same weights in every process)."""
    torch.manual_seed(0)
    return trained_like(TinyEva(**kwargs))


# ----------------------------------------------------------------------------- the spec

SPEC = """\
name: tiny_eva
input: [3, 32, 32]
blocks:
  block:
    layers:
      - {name: norm1, op: layer_norm, eps: 1.0e-6}
      - {name: attn, op: rope_attention, heads: 2, grid: 4, ref_grid: 3}
      - {name: add, op: add, inputs: [attn, in]}
      - {name: norm2, op: layer_norm, eps: 1.0e-6}
      - {name: mlp, op: swiglu, hidden: 40}
      - {name: add_1, op: add, inputs: [add, mlp]}
layers:
  - {name: patch_embed, op: patch_embed, out: 32, patch: 8}
  - {name: cls_token, op: class_token}
  - {name: pos_embed, op: pos_embedding}
  - {name: blocks, use: block, repeat: 2}
  - {name: patches, op: token_slice, start: 1}
  - {name: pool, op: token_mean}
  - {name: fc_norm, op: layer_norm, eps: 1.0e-6}
  - {name: head, op: linear, out: 10}
"""


def _built(text: str = SPEC):
    return archcompiler.build(archcompiler.load_spec(text), seed=0).eval()


def test_the_spec_has_timms_keys_and_computes_timms_logits_params_and_flops():
    """Built, the spec loads the reference's state_dict strictly (k's bias and the rotary table stay outside
    it, as timm's) and gives its logits; archc's parameters are the module's and its FLOPs what
    FlopCounterMode counts (the math backend: it sees QK^T and AV)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    built, reference = _built(), tiny_eva()
    assert list(built.state_dict()) == list(reference.state_dict())
    built.load_state_dict(reference.state_dict(), strict=True)
    attention = built.get_submodule("blocks.0.attn")
    assert type(attention).__name__ == "RopeAttention" and "k_bias" not in attention.state_dict()
    torch.testing.assert_close(attention.rope, reference.rope.pos_embed, rtol=0, atol=0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-6)
    report = archcompiler.analyze(SPEC)
    d, h, s = 32, 40, 17
    rows = {r["name"]: r for r in report["rows"]}
    by_op = report["by_op"]
    assert by_op["rope_attention"]["params"] == 2 * (4 * d * d + 3 * d)
    assert by_op["swiglu"]["params"] == 2 * (2 * d * h + 2 * h + h * d + d)
    # buffers: k's zero bias and the table (sine and cosine of 16 patches x 16 features a head)
    assert rows["blocks"]["buffers"] == sum(b.numel() for b in built.buffers()) == 2 * (d + 16 * 2 * 16)
    assert rows["patches"]["output"] == [16, d] and rows["fc_norm"]["output"] == [d]
    assert report["total"]["params"] == sum(p.numel() for p in reference.parameters())
    assert report["by_op"]["rope_attention"]["macs"] == 2 * (4 * s * d * d + 2 * s * s * d)
    for model in (reference, built):
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
            model(x[:1])
        assert counted.get_total_flops() == report["total"]["flops"]


@pytest.mark.parametrize("options", [
    {"rotate_half": True, "scale_attn_inner": True, "scale_mlp": True},
    {"rope": {"grid_indexing": "xy", "grid_offset": 0.5, "temperature": 100.0}},
    {"qkv_bias": False, "num_prefix_tokens": 1},
    {"qkv_fused": False, "scale_mlp": True},
], ids=["halves-norms-split", "xy-offset-temperature", "no-qkv-bias", "separate-qkv"])
def test_timms_eva_imports_exactly_in_each_layout(options):
    """timm's options EVA-02 uses (the norms inside attention and MLP, timm's SwiGLU, the rotation by halves,
    another grid, separate q, k and v projections: EVA-02 Base's and Large's), each imported as one layer
    per module, verified and built back with the same logits."""
    model = tiny_eva(**options)
    text = archcompiler.import_module(model, name="tiny_eva")
    assert "op: rope_attention" in text and "op: swiglu" in text and "op: token_slice" in text
    if options.get("scale_mlp"):
        assert "norm: true" in text and "layout: split" in text
    if options.get("rotate_half"):
        assert "rotate: halves" in text
    if "rope" in options:
        assert "indexing: xy" in text and "offset: 0.5" in text and "temperature: 100.0" in text
    if "qkv_bias" in options:
        assert "qkv_bias: false" in text
    if "qkv_fused" in options:
        assert "qkv: separate" in text and "qkv_bias" not in text
    _imports_back(model, text)


def _imports_back(model: nn.Module, text: str) -> None:
    assert_imports_back(model, text, atol=1e-6)

def test_rotary_embeddings_over_pixel_coordinates_are_refused_at_the_attention():
    """timm's other table (in_pixels: pixel bands over [-1, 1]) is not archc's: refused, naming the attention."""
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(tiny_eva(rope={"in_pixels": True}), name="tiny_eva")
    assert "blocks.0.attn (EvaAttention)" in str(info.value) and "pixel coordinates" in str(info.value)


def test_a_table_other_than_archcs_is_refused():
    """A rotary table that the module's settings do not make (here: changed after it was made) is refused,
    not imported with archc's own."""
    model = tiny_eva()
    model.rope.pos_embed[0, 0] += 0.1
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model, name="tiny_eva")
    assert "a rotary table other than the one archc makes" in str(info.value)


@pytest.mark.parametrize("edit", [
    ("", ""),
    ("heads: 2, grid: 4, ref_grid: 3}", "heads: 1, grid: 4, norm: true, rotate: halves}"),
    ("hidden: 40}", "hidden: 24, layout: split, norm: true}"),
    ("heads: 2, grid: 4, ref_grid: 3}", "heads: 2, grid: 4, qkv: separate, norm: true}"),
], ids=["tiny", "one-head-norm", "split-norm", "separate-qkv"])
def test_memory_matches_a_measurement(edit):
    """The inference peak exactly (at the rotation of k, or at proj: the projection, the rotated q and k,
    the attention's output and the heads joined); a training step within 1%."""
    assert_memory_measured(SPEC.replace(*edit) if edit[0] else SPEC, infer_batch=3, optimizer="adam")


def test_the_ops_alone_agree_with_torch_in_small_configurations():
    """Each op's output shape and parameters against the built module; the swiglu's values against its
    formula; a grid that is not the sequence's, or heads of a width that is no multiple of 4, refused."""
    import random

    r = random.Random(7)
    for _ in range(3):
        d, hidden, out = 8 * r.randint(1, 3), r.randint(3, 20), r.choice([None, 5])
        layout, gate, act = r.choice(["packed", "split"]), r.choice(["first", "last"]), r.choice(["silu", "sigmoid",
                                                                                                  "gelu"])
        text = (f"name: t\ninput: [3, 8, 8]\nlayers:\n  - {{name: p, op: patch_embed, out: {d}, patch: 4}}\n"
                f"  - {{name: m, op: swiglu, hidden: {hidden}, layout: {layout}, gate: {gate}, act: {act}"
                + (f", out: {out}" if out else "") + "}\n")
        report, model = archcompiler.analyze(text), _built(text)
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            y, tokens = model(x), model.p(x).flatten(2).transpose(1, 2)
            m = model.m
            a, b = m.fc1(tokens).chunk(2, -1) if layout == "packed" else (m.fc1_g(tokens), m.fc1_x(tokens))
            g, v = (b, a) if layout == "packed" and gate == "last" else (a, b)
            expected = m.fc2({"silu": F.silu, "sigmoid": torch.sigmoid, "gelu": F.gelu}[act](g) * v)
        torch.testing.assert_close(y, expected)
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]) == (4, out or d)
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("grid: 4,", "grid: [4, 5],"))
    assert "not prefix 1 + the grid's 4 x 5" in str(info.value)
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("heads: 2,", "heads: 16,"))
    assert "multiple of 4" in str(info.value)


def test_the_generated_module_is_standalone_scripts_and_imports_back():
    """RopeAttention's and GatedMlp's text is copied into the generated module, which imports only torch;
    TorchScript compiles it; archc's own built module imports back to a spec with the same logits."""
    built = _built(SPEC.replace("hidden: 40}", "hidden: 40, layout: split, norm: true}"))
    assert "class RopeAttention(nn.Module):" in built.code and "class GatedMlp(nn.Module):" in built.code
    assert "archcompiler" not in built.code
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(built)(x), built(x))
    text = archcompiler.import_module(built, name="again")
    assert "ref_grid: [3, 3]" in text and "layout: split" in text
    _imports_back(built, text)


def test_archc_import_reads_a_timm_eva_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process: `archc import file.py:callable` (the file imports timm's
    classes from this test module), the spec it writes verified against the module (exit 0: exact)."""
    (tmp_path / "timm_like.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                           "from test_eva import tiny_eva  # noqa: E402,F401\n")
    done = run_archc("import", "timm_like.py:tiny_eva", "-o", "eva.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "eva.yaml").read_text()
    assert "op: rope_attention, heads: 2, grid: [4, 4], ref_grid: [3, 3]" in text
    assert "op: swiglu, hidden: 40" in text and "op: token_slice, start: 1" in text
    _imports_back(tiny_eva(), text)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
