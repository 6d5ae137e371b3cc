"""timm's token models (issue #32): DeiT's distillation token and averaged heads, EfficientFormer's image to
tokens (``to_tokens``) and its attention with a learned bias per relative offset (``biased_attention``).

timm is no dependency: the reference is a hand-written copy of timm's EfficientFormer ``Attention`` (the same
attributes, buffers and forward) whose class claims timm's module path, as the importer reads that class by
package (timm has other classes named Attention), in a small model written the way timm's
VisionTransformerDistilled and EfficientFormer write theirs. timm's own models are measured in a side
environment (benchmarks/import_timm.py: deit_tiny_distilled_patch16_224, efficientformer_l1)."""

from __future__ import annotations

import inspect
import sys

import pytest
from conftest import assert_memory_measured, run_archc, trained_like

import archcompiler
from archcompiler import BackendError, GraphError

torch = pytest.importorskip("torch")
nn = torch.nn

# ----------------------------------------------------------------------------- timm's modules, by hand (MODULE)


class Attention(nn.Module):
    """timm.models.efficientformer.Attention (timm 1.0): the same attributes and buffers, the same forward."""

    def __init__(self, dim=384, key_dim=32, num_heads=8, attn_ratio=4, resolution=7):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim ** -0.5
        self.key_dim = key_dim
        self.key_attn_dim = key_dim * num_heads
        self.val_dim = int(attn_ratio * key_dim)
        self.val_attn_dim = self.val_dim * num_heads
        self.attn_ratio = attn_ratio
        self.qkv = nn.Linear(dim, self.key_attn_dim * 2 + self.val_attn_dim)
        self.proj = nn.Linear(self.val_attn_dim, dim)
        pos = torch.stack(torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")).flatten(1)
        rel_pos = (pos[..., :, None] - pos[..., None, :]).abs()
        rel_pos = (rel_pos[0] * resolution) + rel_pos[1]
        self.attention_biases = torch.nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", rel_pos)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x)
        qkv = qkv.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn + self.attention_biases[:, self.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, self.val_attn_dim)
        return self.proj(x)


Attention.__module__ = "timm.models.efficientformer"     # where timm's class lives: the importer reads it as a leaf


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class Pooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class Distilled(nn.Module):
    """A conv stem, EfficientFormer's pooling mixer, Flat and attention on the 4 x 4 grid, then DeiT's class and
    distillation tokens, position embedding, and the average of the two heads on tokens 0 and 1."""

    INPUT_SHAPE = (3, 16, 16)

    def __init__(self, dim=16, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, stride=4, padding=1)
        self.mixer = Pooling()
        self.flat = Flat()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, key_dim=4, num_heads=2, attn_ratio=2, resolution=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 18, dim))
        self.norm = nn.LayerNorm(dim)
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, classes)
        self.head_dist = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.flat(x + self.mixer(x))
        x = x + self.attn(self.norm1(x))
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), self.dist_token.expand(x.shape[0], -1, -1), x),
                      dim=1)
        x = self.norm(x + self.pos_embed)
        x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
        return (self.head(x) + self.head_dist(x_dist)) / 2


def distilled() -> Distilled:
    """The callable `archc import` runs: seeded, trained-like (the bias table far from zero)."""
    torch.manual_seed(0)
    model = trained_like(Distilled())
    with torch.no_grad():
        model.attn.attention_biases.normal_(0, 1)
    return model


# ----------------------------------------------------------------------------- end of MODULE

SPEC = """\
name: biased
input: [3, 16, 16]
layers:
  - {name: stem, op: conv, out: 16, kernel: 3, stride: 4, padding: 1}
  - {name: tokens, op: to_tokens}
  - {name: attn, op: biased_attention, heads: 2, key_dim: 4, value_dim: 8}
  - {name: norm, op: layer_norm}
  - {name: pool, op: token_mean}
  - {name: head, op: linear, out: 3}
"""


def test_the_model_imports_exactly_through_the_command(tmp_path):
    """`archc import` in a fresh process: verified by archc, and again here (built from the written file, the
    module's state_dict loaded strictly, the same logits)."""
    source = inspect.getsource(sys.modules[__name__])
    module = source.split("# " + "-" * 77 + " timm's modules, by hand (MODULE)", 1)[1].split("# " + "-" * 77, 1)[0]
    (tmp_path / "timmlike.py").write_text("import torch\nfrom torch import nn\nfrom conftest import trained_like\n"
                                          + module)
    done = run_archc("import", "timmlike.py:distilled", "-o", "net.yaml", cwd=tmp_path,
                     env={"PYTHONPATH": str(inspect.getfile(trained_like)).rpartition("/")[0]})
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    text = (tmp_path / "net.yaml").read_text()
    for line in ("{name: dist_token, op: class_token}", "{name: cls_token, op: class_token}", "op: to_tokens",
                 "{name: attn, op: biased_attention, heads: 2, key_dim: 4, value_dim: 8}", "op: affine, scale: 0.5"):
        assert line in text, text
    assert text.index("name: dist_token") < text.index("name: cls_token")     # the last token prepended first
    model = distilled()
    built = archcompiler.build(archcompiler.load_spec(tmp_path / "net.yaml")).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(built(x), model(x), rtol=1e-5, atol=1e-5)


def test_biased_attention_is_timms_keys_logits_params_and_flops():
    """Built, the layer has the reference's state_dict keys (the index buffer included, as timm keeps it),
    loads its weights and gives its output; its parameters are the reference's, its buffer the index (S x S),
    and the network's FLOPs what FlopCounterMode counts (the projections and the two products)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = archcompiler.load_spec(SPEC)
    built = archcompiler.build(spec, seed=0).eval()
    reference = Attention(16, key_dim=4, num_heads=2, attn_ratio=2, resolution=4)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0, 1)
    attn = built.get_submodule("attn")
    assert list(attn.state_dict()) == list(reference.state_dict())
    attn.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference(x), rtol=1e-5, atol=1e-5)
    report = archcompiler.analyze(spec)
    row = next(r for r in report["rows"] if r["name"] == "attn")
    assert row["output"] == [16, 16] and row["params"] == sum(p.numel() for p in reference.parameters())
    assert row["buffers"] == 16 * 16
    assert report["total"]["params"] == sum(p.numel() for p in built.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counted:
        built(torch.randn(1, 3, 16, 16))
    assert counted.get_total_flops() == report["total"]["flops"]


def test_memory_is_measured():
    """The inference peak exactly (at a batch of one the products read views, over one they copy q, k and v),
    a training step within 1%."""
    assert_memory_measured(SPEC, infer_batch=1, train_batch=None)
    assert_memory_measured(SPEC)


def test_a_sequence_that_is_no_square_grid_is_refused_at_the_layer():
    text = SPEC.replace("input: [3, 16, 16]", "input: [3, 16, 12]")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    assert "attn" in str(info.value) and "12 tokens, no square" in str(info.value)


def test_what_the_ops_cannot_hold_is_refused_saying_why():
    """A bias index other than the grid's offsets; a parameter of two tokens concatenated before a sequence."""
    model = distilled()
    with torch.no_grad():
        model.attn.attention_bias_idxs[0, 1] = 5
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model, name="odd")
    assert "attn (Attention)" in info.value.errors[0].format() and "offsets" in info.value.errors[0].format()

    class Two(nn.Module):
        INPUT_SHAPE = (3, 8, 8)

        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 4, 4, 4)
            self.tokens = nn.Parameter(torch.randn(1, 2, 4))

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            return torch.cat((self.tokens.expand(x.shape[0], -1, -1), x), dim=1)[:, 0]

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Two(), name="two")
    assert "(1, 1, D) token" in info.value.errors[0].format()
