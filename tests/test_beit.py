"""timm's BEiT (issue #32): ``self_attention`` with ``layout: beit`` is laid out and computed as
``timm.models.beit.Attention`` (``qkv`` without bias, ``q_bias`` and ``v_bias``, a relative position bias
table over the patch grid and the class token; runtime.py's BeitAttention), ``token_slice`` takes the patch
tokens after the class token (``x[:, 1:]``) that BEiT's head averages, and ``archc import`` reads timm's
BEiT as those layers.

timm is no dependency: the reference here is a hand-written copy of timm's BEiT ``Attention`` (the same
attribute names, buffers and forward) whose class claims timm's module path, as the importer reads a class
by name and package, and a small BEiT around it (timm's PatchEmbed, class token, Block with gamma_1 and
gamma_2, the mean of the patch tokens, fc_norm and head). The check against timm's own
beit_base_patch16_224 runs in a side environment with timm installed (benchmarks/import_timm.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc
from timm_like import Mlp

import archcompiler
from archcompiler import BackendError, GraphError, SpecError
from archcompiler.ops.self_attention import BEIT

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- timm's modules, by hand


def gen_relative_position_index(window_size):
    """timm.models.beit.gen_relative_position_index, line for line."""
    num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
    window_area = window_size[0] * window_size[1]
    coords = torch.stack(torch.meshgrid(torch.arange(window_size[0]), torch.arange(window_size[1]), indexing="ij"))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += window_size[0] - 1
    relative_coords[:, :, 1] += window_size[1] - 1
    relative_coords[:, :, 0] *= 2 * window_size[1] - 1
    relative_position_index = torch.zeros(size=(window_area + 1,) * 2, dtype=relative_coords.dtype)
    relative_position_index[1:, 1:] = relative_coords.sum(-1)
    relative_position_index[0, 0:] = num_relative_distance - 3
    relative_position_index[0:, 0] = num_relative_distance - 2
    relative_position_index[0, 0] = num_relative_distance - 1
    return relative_position_index


class Attention(nn.Module):
    """timm.models.beit.Attention (timm 1.0), line for line: the same attributes, buffers and forward."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qkv_bias_separate=False, attn_drop=0.0, proj_drop=0.0,
                 window_size=None, attn_head_dim=None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        if attn_head_dim is not None:
            head_dim = attn_head_dim
        all_head_dim = head_dim * self.num_heads
        self.scale = head_dim ** -0.5
        self.fused_attn = True
        self.qkv_bias_separate = qkv_bias_separate
        self.qkv = nn.Linear(dim, all_head_dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.randn(all_head_dim) * 0.1)
            self.register_buffer("k_bias", torch.zeros(all_head_dim), persistent=False)
            self.v_bias = nn.Parameter(torch.randn(all_head_dim) * 0.1)
        else:
            self.q_bias = None
            self.k_bias = None
            self.v_bias = None
        if window_size:
            self.window_size = window_size
            self.num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
            self.relative_position_bias_table = nn.Parameter(torch.randn(self.num_relative_distance, num_heads))
            self.register_buffer("relative_position_index", gen_relative_position_index(window_size),
                                 persistent=False)
        else:
            self.window_size = None
            self.relative_position_bias_table = None
            self.relative_position_index = None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(all_head_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _get_rel_pos_bias(self):
        relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1] + 1, self.window_size[0] * self.window_size[1] + 1, -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        return relative_position_bias.unsqueeze(0)

    def forward(self, x, shared_rel_pos_bias=None):
        B, N, C = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
            if self.qkv_bias_separate:
                qkv = self.qkv(x)
                qkv += qkv_bias
            else:
                qkv = F.linear(x, weight=self.qkv.weight, bias=qkv_bias)
        qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            rel_pos_bias = None
            if self.relative_position_bias_table is not None:
                rel_pos_bias = self._get_rel_pos_bias()
                if shared_rel_pos_bias is not None:
                    rel_pos_bias = rel_pos_bias + shared_rel_pos_bias
            elif shared_rel_pos_bias is not None:
                rel_pos_bias = shared_rel_pos_bias
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=rel_pos_bias,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            if self.relative_position_bias_table is not None:
                attn = attn + self._get_rel_pos_bias()
            if shared_rel_pos_bias is not None:
                attn = attn + shared_rel_pos_bias
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


Attention.__module__ = "timm.models.beit"      # where timm's class lives: the importer reads it as a leaf


class Block(nn.Module):
    """timm.models.beit.Block: gamma_1 and gamma_2 scale the residual branches (init_values)."""

    def __init__(self, dim, heads, mlp, window_size, **attention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, window_size=window_size, **attention)
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp)
        self.drop_path2 = nn.Identity()
        self.gamma_1 = nn.Parameter(0.1 + 0.05 * torch.randn(dim))
        self.gamma_2 = nn.Parameter(0.1 + 0.05 * torch.randn(dim))

    def forward(self, x, shared_rel_pos_bias=None):
        x = x + self.drop_path1(self.gamma_1 * self.attn(self.norm1(x), shared_rel_pos_bias=shared_rel_pos_bias))
        return x + self.drop_path2(self.gamma_2 * self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class TinyBeit(nn.Module):
    """timm's Beit, small: 32x32 images in 4x4 patches (an 8x8 grid and the class token), no absolute position
    embedding, a relative position bias in each block (use_rel_pos_bias), the head on the patch tokens' mean."""

    INPUT_SHAPE = (3, 32, 32)

    def __init__(self, dim=32, depth=2, heads=4, mlp=64, classes=10, rel_pos=True, qkv_bias=True, **attention):
        super().__init__()
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed(4, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        grid = (8, 8) if rel_pos else None
        self.blocks = nn.ModuleList([Block(dim, heads, mlp, grid, qkv_bias=qkv_bias, **attention)
                                     for _ in range(depth)])
        self.norm = nn.Identity()
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = blk(x, shared_rel_pos_bias=None)
        x = self.norm(x)
        x = x[:, self.num_prefix_tokens:].mean(dim=1)
        return self.head(self.head_drop(self.fc_norm(x)))


def tiny_beit(**kwargs) -> TinyBeit:
    """The callable `archc import` runs (seeded: the same weights in every process)."""
    torch.manual_seed(0)
    return TinyBeit(**kwargs).eval()


# ----------------------------------------------------------------------------- the spec

SPEC = """\
name: tiny_beit
input: [3, 32, 32]
params: {dim: 32, heads: 4, mlp: 64, depth: 2, qkv_bias: true}
blocks:
  block:
    args: [dim, heads, mlp]
    layers:
      - {name: norm1, op: layer_norm, eps: 1.0e-6}
      - {name: attn, op: self_attention, heads: heads, layout: beit, qkv_bias: qkv_bias, grid: [8, 8]}
      - {name: gamma_1, op: layer_scale}
      - {name: add, op: add, inputs: [gamma_1, in]}
      - {name: norm2, op: layer_norm, eps: 1.0e-6}
      - {name: mlp.fc1, op: linear, over: tokens, out: mlp, act: gelu}
      - {name: mlp.fc2, op: linear, over: tokens, out: dim}
      - {name: gamma_2, op: layer_scale}
      - {name: add_1, op: add, inputs: [add, gamma_2]}
layers:
  - {name: patch_embed.proj, op: patch_embed, out: dim, patch: 4}
  - {name: cls_token, op: class_token}
  - table:
      use: block
      columns: [name, dim, heads, mlp, repeat]
      rows:
        - [blocks, dim, heads, mlp, depth]
  - {name: patches, op: token_slice, start: 1}
  - {name: mean, op: token_mean}
  - {name: fc_norm, op: layer_norm, eps: 1.0e-6}
  - {name: head, op: linear, out: 10}
"""


def _spec(overrides: list[str] | None = None, text: str = SPEC):
    return archcompiler.load_spec(text, overrides)


def _loads_and_agrees(spec, reference: nn.Module) -> nn.Module:
    """The spec built has the reference's state_dict keys (in order), loads its weights strictly and gives its logits."""
    built = archcompiler.build(spec, seed=0).eval()
    assert list(built.state_dict()) == list(reference.state_dict())
    built.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-6)
    return built


def test_the_beit_layout_has_timms_keys_and_computes_timms_logits_params_and_flops():
    """Built with layout: beit, the spec has the reference's state_dict (the same keys, in order; k's bias and the
    index outside it, as timm's), loads its weights strictly and gives its logits; archc's parameters are the
    module's (qkv 3D^2, q_bias and v_bias 2D, the table ((2H - 1)(2W - 1) + 3) x heads, proj D^2 + D) and its
    FLOPs what FlopCounterMode counts in the reference (the projections and scaled_dot_product_attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    spec = _spec()
    reference = tiny_beit()
    built = _loads_and_agrees(spec, reference)
    assert type(built.get_submodule("blocks.0.attn")).__name__ == "BeitAttention"
    report = archcompiler.analyze(spec)
    d, heads = 32, 4
    attention = report["by_op"][BEIT]
    assert attention["count"] == 2 and attention["params"] == 2 * (4 * d * d + 3 * d + (15 * 15 + 3) * heads)
    assert report["total"]["params"] == sum(p.numel() for p in reference.parameters())
    x = torch.randn(1, 3, 32, 32)
    for model in (reference, built):        # the math backend: the counter sees QK^T and AV (not CPU's fused kernel)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
            model(x)
        assert counted.get_total_flops() == report["total"]["flops"]


def test_without_the_biases_or_the_position_bias_and_with_dropout_on_the_attention_weights():
    built = _loads_and_agrees(_spec(["qkv_bias=false"]), tiny_beit(qkv_bias=False))
    assert built.get_submodule("blocks.0.attn").q_bias is None
    no_table = SPEC.replace(", grid: [8, 8]", "")
    built = _loads_and_agrees(_spec(text=no_table), tiny_beit(rel_pos=False))
    assert built.get_submodule("blocks.0.attn").relative_position_bias_table is None
    # dropout on the attention's weights in training, as timm's (the same generator state: the same mask)
    built = archcompiler.build(_spec(text=SPEC.replace("layout: beit,", "layout: beit, dropout: 0.25,")), seed=0)
    reference = tiny_beit(attn_drop=0.25).train()
    built.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a = built.train()(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, reference(x), rtol=1e-5, atol=1e-6)


def test_the_op_alone_agrees_with_torch_in_random_small_configurations():
    """As tests/test_ops_vs_torch.py checks every token op, on grids of any shape: the shape, parameters and
    2 x MACs against FlopCounterMode (autograd on, the math backend: it sees QK^T and AV)."""
    import random

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    r = random.Random(32)
    for _ in range(4):
        heads, patch = r.choice([1, 2, 4]), r.choice([2, 4])
        dim, h, w, bias = 4 * r.randint(1, 4), r.randint(1, 4), r.randint(2, 4), r.choice(["true", "false"])
        text = (f"name: t\ninput: [3, {h * patch}, {w * patch}]\nlayers:\n"
                f"  - {{name: p, op: patch_embed, out: {dim}, patch: {patch}}}\n  - {{name: c, op: class_token}}\n"
                f"  - {{name: a, op: self_attention, heads: {heads}, layout: beit, qkv_bias: {bias}, grid: [{h}, {w}]}}\n")
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        reference = Attention(dim, heads, qkv_bias=bias == "true", window_size=(h, w))
        reference.load_state_dict(model.get_submodule("a").state_dict(), strict=True)
        x = torch.randn(2, 3, h * patch, w * patch)
        seen: list = []
        hook = model.get_submodule("a").register_forward_hook(lambda m, args, out, seen=seen: seen.append(args[0]))
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            y = model(x)
        hook.remove()
        with torch.no_grad():
            torch.testing.assert_close(y, reference(seen[0]))      # the attention's own input, the sequence
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]) == (h * w + 1, dim), text
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == 2 * report["total"]["flops"], text


def test_the_grid_must_be_the_sequences_and_needs_the_beit_layout():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(SPEC.replace("grid: [8, 8]", "grid: [8, 7]"))
    assert "not a class token and a 8x7 grid" in str(info.value)
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(SPEC.replace("layout: beit", "layout: timm"))
    assert "grid needs layout: beit" in str(info.value)
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(SPEC.replace("layout: beit, ", "").replace(", grid: [8, 8]", ""), ["qkv_bias=false"])
    assert "needs layout: timm or beit" in str(info.value)
    square = archcompiler.analyze(SPEC.replace("grid: [8, 8]", "grid: 8"))      # one number: a square grid
    assert square["total"]["params"] == archcompiler.analyze(SPEC)["total"]["params"]


@pytest.mark.parametrize("overrides, text, train_batch", [
    ([], SPEC, 16),
    (["heads=1"], SPEC, None),
    ([], SPEC.replace(", grid: [8, 8]", ""), 4),
], ids=["4-heads", "1-head", "no-position-bias"])
def test_memory_matches_a_measurement(overrides, text, train_batch):
    """The inference peak exactly (at the attention: its qkv projection, the output and log-sum-exp per head and
    token, and the position bias once for the batch); a training step within 1% (the math path's scores kept;
    the S x S index, a buffer the memory pass does not count, is under 1% at this batch)."""
    assert_memory_measured(_spec(overrides, text), infer_batch=3, train_batch=train_batch, optimizer="adam")


def test_the_generated_module_is_standalone_and_scripts():
    """BeitAttention's text is copied into the generated module, which imports only torch; TorchScript compiles it."""
    built = archcompiler.build(_spec(), seed=0).eval()
    assert "class BeitAttention(nn.Module):" in built.code and "archcompiler" not in built.code
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(built)(x), built(x))


def test_it_is_drawn_with_its_layout():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    assert "4 heads (BEiT, 8x8 position bias)" in build_dot(_spec()).source
    assert "tokens 1:" in build_dot(_spec()).source


# ----------------------------------------------------------------------------- token_slice


def test_token_slice_is_a_view_of_the_tokens_and_imports_from_indexing():
    text = ("name: t\ninput: [3, 16, 16]\nlayers:\n  - {name: p, op: patch_embed, out: 8, patch: 4}\n"
            "  - {name: c, op: class_token}\n  - {name: s, op: token_slice, start: 2, end: 9}\n")
    report = archcompiler.analyze(text)
    assert report["rows"][-1]["output"] == [7, 8] and report["total"]["flops"] == archcompiler.analyze(
        text.replace("  - {name: s, op: token_slice, start: 2, end: 9}\n", ""))["total"]["flops"]
    model = archcompiler.build(text, seed=0).eval()
    assert "[:, 2:9]" in model.code
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text.replace("end: 9", "end: 18"))
    assert "not within the sequence" in str(info.value)

    class Slices(nn.Module):
        def __init__(self, index):
            super().__init__()
            self.proj, self.index = nn.Linear(6, 6), index

        def forward(self, x):
            return self.proj(x.flatten(2).transpose(1, 2))[self.index].mean(1)

    for index, fields in (((slice(None), slice(1, None)), "start: 1}"), ((slice(None), slice(2, -3)), "start: 2, end: 13}")):
        assert fields in archcompiler.import_module(Slices(index), input=(6, 4, 4))
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Slices((slice(None), slice(0, None, 2))), input=(6, 4, 4))
    assert "step 2" in str(info.value)


# ----------------------------------------------------------------------------- archc import


def _imports_back(model: nn.Module, text: str) -> None:
    assert_imports_back(model, text, batch=1, atol=1e-6)

def test_timms_beit_imports_as_the_beit_layout_the_patch_tokens_mean_and_fc_norm():
    model = tiny_beit()
    text = archcompiler.import_module(model, name="tiny_beit")
    assert "layout: beit, grid: [8, 8]}" in text and "op: token_slice, start: 1}" in text
    assert "{name: fc_norm, op: layer_norm" in text and "qkv_bias" not in text
    _imports_back(model, text)


@pytest.mark.parametrize("kwargs, has", [
    ({"qkv_bias": False, "attn_drop": 0.1}, "qkv_bias: false, dropout: 0.1}"),
    ({"rel_pos": False}, "layout: beit}"),
    ({"qkv_bias_separate": True}, "grid: [8, 8]}"),
], ids=["no-biases-dropout", "no-position-bias", "bias-added-after"])
def test_timms_beit_variants_import(kwargs, has):
    model = tiny_beit(**kwargs)
    text = archcompiler.import_module(model)
    assert has in text
    _imports_back(model, text)


def test_the_unfused_path_is_the_same_computation():
    model = tiny_beit()
    for block in model.blocks:
        block.attn.fused_attn = False
    _imports_back(model, archcompiler.import_module(model))


class SharedBias(TinyBeit):
    """A position bias of the model given to every block (as BEiT's use_shared_rel_pos_bias; timm's own makes it
    in a module whose table archc does not read, refused there)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shared", torch.randn(1, 4, 65, 65))

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x, shared_rel_pos_bias=self.shared)
        return self.head(self.fc_norm(x[:, 1:].mean(dim=1)))


def _qkv_with_bias() -> TinyBeit:
    model = tiny_beit()
    model.blocks[0].attn.qkv = nn.Linear(32, 96)
    return model


@pytest.mark.parametrize("model, why", [
    (lambda: tiny_beit(proj_drop=0.1), "proj_drop"),
    (_qkv_with_bias, "a qkv projection with a bias of its own"),
    (lambda: SharedBias(), "use_shared_rel_pos_bias"),
], ids=["proj_drop", "qkv-bias", "shared-bias"])
def test_what_archcs_attention_cannot_express_is_refused(model, why):
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model())
    message = str(info.value)
    assert "blocks.0.attn" in message and "Attention" in message and why in message


def test_archcs_own_built_module_imports_back():
    """A module archc built with layout: beit (its BeitAttention, a leaf of the trace) imports to the same spec."""
    built = archcompiler.build(_spec(["qkv_bias=false"]), seed=0).eval()
    text = archcompiler.import_module(built, name="again")
    assert "layout: beit" in text and "qkv_bias: false" in text and "grid: [8, 8]" in text
    _imports_back(built, text)


def test_archc_import_reads_a_timm_beit_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process: `archc import file.py:callable` (the file imports timm's
    classes from this test module), the spec it writes verified against the module."""
    (tmp_path / "timm_like.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                           "from test_beit import tiny_beit  # noqa: E402,F401\n")
    done = run_archc("import", "timm_like.py:tiny_beit", "--arg", "depth=3", "-o", "beit.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "beit.yaml").read_text()
    assert "layout: beit" in text and "verified" in done.stderr + done.stdout
    _imports_back(tiny_beit(depth=3), text)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
