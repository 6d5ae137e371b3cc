"""timm's MaxViT and CoAtNet _rw attention (issue #32): ``window_attention`` with ``layout: maxxvit`` (timm's
``AttentionCl`` on its channels-last map cut into windows or a grid) or ``layout: maxxvit_2d`` (timm's
``Attention2d``: 1 x 1 convolutions, over the whole map), runtime.py's PartitionAttention, with timm's
``state_dict`` keys (``qkv``, ``proj``, ``rel_pos.relative_position_bias_table``); ``archc import`` reads
timm's partition (window_partition, grid_partition and their reverses) and attention modules.

timm is no dependency: the references here are hand-written copies of timm's modules (timm/models/maxxvit.py,
timm/layers/pos_embed_rel.py: the same attribute names and forward), the attention classes claiming timm's
module path, as the importer reads a class by name and package. The check against timm's own
maxvit_tiny_rw_224 and coatnet_0_rw_224 runs in a side environment (benchmarks/import_timm.py)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc

import archcompiler
from archcompiler import BackendError, GraphError, SpecError
from archcompiler.ops.window_attention import MAXXVIT

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- timm's modules, by hand


class RelPosBias(nn.Module):
    """timm.layers.RelPosBias (no prefix tokens): a (2W - 1)^2 x heads table read at every pair of positions."""

    def __init__(self, window_size, num_heads):
        super().__init__()
        self.window_size = window_size
        self.prefix_tokens = 0
        self.bias_shape = (window_size[0] * window_size[1],) * 2 + (num_heads,)
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size[0]), torch.arange(window_size[1]),
                                            indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        rel[:, :, 0] += window_size[0] - 1
        rel[:, :, 1] += window_size[1] - 1
        rel[:, :, 0] *= 2 * window_size[1] - 1
        self.register_buffer("relative_position_index", rel.sum(-1).view(-1), persistent=False)

    def get_bias(self):
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(self.bias_shape).permute(2, 0, 1).unsqueeze(0).contiguous()

    def forward(self, attn, shared_rel_pos=None):
        return attn + self.get_bias()


class AttentionCl(nn.Module):
    """timm's maxxvit.AttentionCl (channels last), line for line."""

    def __init__(self, dim, dim_out=None, dim_head=32, bias=True, expand_first=True, head_first=True,
                 rel_pos_cls=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        dim_out = dim_out or dim
        dim_attn = dim_out if expand_first and dim_out > dim else dim
        self.num_heads = dim_attn // dim_head
        self.dim_head = dim_head
        self.head_first = head_first
        self.scale = dim_head ** -0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim_attn * 3, bias=bias)
        self.rel_pos = rel_pos_cls(num_heads=self.num_heads) if rel_pos_cls else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim_attn, dim_out, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, shared_rel_pos=None):
        B = x.shape[0]
        restore_shape = x.shape[:-1]
        if self.head_first:
            q, k, v = self.qkv(x).view(B, -1, self.num_heads, self.dim_head * 3).transpose(1, 2).chunk(3, dim=3)
        else:
            q, k, v = self.qkv(x).reshape(B, -1, 3, self.num_heads, self.dim_head).transpose(1, 3).unbind(2)
        if self.fused_attn:
            attn_bias = self.rel_pos.get_bias() if self.rel_pos is not None else shared_rel_pos
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = self.rel_pos(attn) if self.rel_pos is not None else attn
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(restore_shape + (-1,))
        return self.proj_drop(self.proj(x))


class Attention2d(nn.Module):
    """timm's maxxvit.Attention2d (NCHW, 1 x 1 convolutions), line for line."""

    def __init__(self, dim, dim_out=None, dim_head=32, bias=True, expand_first=True, head_first=True,
                 rel_pos_cls=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        dim_out = dim_out or dim
        dim_attn = dim_out if expand_first else dim
        self.num_heads = dim_attn // dim_head
        self.dim_head = dim_head
        self.head_first = head_first
        self.scale = dim_head ** -0.5
        self.fused_attn = True
        self.qkv = nn.Conv2d(dim, dim_attn * 3, 1, bias=bias)
        self.rel_pos = rel_pos_cls(num_heads=self.num_heads) if rel_pos_cls else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(dim_attn, dim_out, 1, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, shared_rel_pos=None):
        B, C, H, W = x.shape
        if self.head_first:
            q, k, v = self.qkv(x).view(B, self.num_heads, self.dim_head * 3, -1).chunk(3, dim=2)
        else:
            q, k, v = self.qkv(x).reshape(B, 3, self.num_heads, self.dim_head, -1).unbind(1)
        attn_bias = self.rel_pos.get_bias() if self.rel_pos is not None else shared_rel_pos
        x = F.scaled_dot_product_attention(q.transpose(-1, -2).contiguous(), k.transpose(-1, -2).contiguous(),
                                           v.transpose(-1, -2).contiguous(), attn_mask=attn_bias,
                                           dropout_p=self.attn_drop.p if self.training else 0.0,
                                           ).transpose(-1, -2).reshape(B, -1, H, W)
        return self.proj_drop(self.proj(x))


for _cls in (AttentionCl, Attention2d):
    _cls.__module__ = "timm.models.maxxvit"     # where timm's classes live: the importer reads them as leaves


def window_partition(x, window_size):
    B, H, W, C = x.shape
    x = x.view(B, H // window_size[0], window_size[0], W // window_size[1], window_size[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size[0], window_size[1], C)


def window_reverse(windows, window_size, img_size):
    H, W = img_size
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size[0], W // window_size[1], window_size[0], window_size[1], C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def grid_partition(x, grid_size):
    B, H, W, C = x.shape
    x = x.view(B, grid_size[0], H // grid_size[0], grid_size[1], W // grid_size[1], C)
    return x.permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, grid_size[0], grid_size[1], C)


def grid_reverse(windows, grid_size, img_size):
    H, W = img_size
    C = windows.shape[-1]
    x = windows.view(-1, H // grid_size[0], W // grid_size[1], grid_size[0], grid_size[1], C)
    return x.permute(0, 3, 1, 4, 2, 5).contiguous().view(-1, H, W, C)


def _rel_pos(size):
    return lambda num_heads: RelPosBias((size, size), num_heads)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, conv=False):
        super().__init__()
        layer = (lambda a, b: nn.Conv2d(a, b, 1)) if conv else nn.Linear
        self.fc1, self.act, self.drop1, self.norm, self.fc2, self.drop2 = \
            layer(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Identity(), layer(hidden, dim), nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class PartitionAttentionCl(nn.Module):
    """timm's maxxvit.PartitionAttentionCl: norm, window (block) or grid attention, MLP, on the channels-last map."""

    def __init__(self, dim, partition_type, size, dim_head, **attention):
        super().__init__()
        self.partition_block = partition_type == "block"
        self.partition_size = (size, size)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = AttentionCl(dim, dim, dim_head=dim_head, rel_pos_cls=_rel_pos(size), **attention)
        self.ls1, self.drop_path1 = nn.Identity(), nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 2 * dim)
        self.ls2, self.drop_path2 = nn.Identity(), nn.Identity()

    def _partition_attn(self, x):
        img_size = x.shape[1:3]
        if self.partition_block:
            return window_reverse(self.attn(window_partition(x, self.partition_size)), self.partition_size, img_size)
        return grid_reverse(self.attn(grid_partition(x, self.partition_size)), self.partition_size, img_size)

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self._partition_attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class MaxxVitBlock(nn.Module):
    """timm's MaxxVitBlock after its conv: to channels last, window then grid attention, back."""

    def __init__(self, dim, size, dim_head, **attention):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.attn_block = PartitionAttentionCl(dim, "block", size, dim_head, **attention)
        self.attn_grid = PartitionAttentionCl(dim, "grid", size, dim_head, **attention)

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        return self.attn_grid(self.attn_block(x)).permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class Downsample2d(nn.Module):
    def __init__(self, dim, dim_out, bias=True):
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.expand = nn.Conv2d(dim, dim_out, 1, bias=bias) if dim != dim_out else nn.Identity()

    def forward(self, x):
        return self.expand(self.pool(x))


class TransformerBlock2d(nn.Module):
    """timm's maxxvit.TransformerBlock2d (CoAtNet): attention over the whole map, widening at stride 2."""

    def __init__(self, dim, dim_out, stride, size, dim_head, **attention):
        super().__init__()
        if stride == 2:
            self.shortcut = Downsample2d(dim, dim_out, bias=False)
            self.norm1 = nn.Sequential()
            self.norm1.add_module("norm", LayerNorm2d(dim, eps=1e-6))
            self.norm1.add_module("down", Downsample2d(dim, dim))
        else:
            self.shortcut, self.norm1 = nn.Identity(), LayerNorm2d(dim, eps=1e-6)
        self.attn = Attention2d(dim, dim_out, dim_head=dim_head, expand_first=False, rel_pos_cls=_rel_pos(size),
                                **attention)
        self.ls1, self.drop_path1 = nn.Identity(), nn.Identity()
        self.norm2 = LayerNorm2d(dim_out, eps=1e-6)
        self.mlp = Mlp(dim_out, 2 * dim_out, conv=True)
        self.ls2, self.drop_path2 = nn.Identity(), nn.Identity()

    def forward(self, x, shared_rel_pos=None):
        x = self.shortcut(x) + self.drop_path1(self.ls1(self.attn(self.norm1(x), shared_rel_pos=shared_rel_pos)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class TinyMaxxVit(nn.Module):
    """A stem, a MaxViT block (8 x 8 map, 4 x 4 windows and grid), two CoAtNet blocks (4 x 4 map), the head."""

    INPUT_SHAPE = (3, 16, 16)

    def __init__(self, dim=16, dim_head=8, classes=5, attention=None, coat=None):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.block = MaxxVitBlock(dim, 4, dim_head, **(attention or {}))
        self.coat = nn.Sequential(TransformerBlock2d(dim, 2 * dim, 2, 4, dim_head, **(coat or {})),
                                  TransformerBlock2d(2 * dim, 2 * dim, 1, 4, dim_head, **(coat or {})))
        self.norm = LayerNorm2d(2 * dim, eps=1e-6)
        self.head = nn.Linear(2 * dim, classes)

    def forward(self, x):
        x = self.norm(self.coat(self.block(self.stem(x))))
        return self.head(x.mean((2, 3)))


def tiny(**kwargs) -> TinyMaxxVit:
    """The callable `archc import` runs (seeded: the same weights in every process)."""
    torch.manual_seed(0)
    return TinyMaxxVit(**kwargs).eval()


# ----------------------------------------------------------------------------- the op against timm's modules


def _moved(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module.eval()


@pytest.mark.parametrize("grid", [False, True], ids=["window", "grid"])
def test_partition_attention_is_timms_attention_cl_on_windows_and_grid(grid):
    """runtime.py's PartitionAttention holds AttentionCl's keys (strictly) and gives what it gives on timm's
    window or grid partition of a channels-last map, and back."""
    from archcompiler.backends.torch.runtime import PartitionAttention

    torch.manual_seed(0)
    reference = _moved(AttentionCl(16, 16, dim_head=8, rel_pos_cls=_rel_pos(3)))
    ours = PartitionAttention(16, 2, 3, grid, False, 16, 0.0).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 6, 9, 16)
    cut, back = (grid_partition, grid_reverse) if grid else (window_partition, window_reverse)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), back(reference(cut(x, (3, 3))), (3, 3), (6, 9)), rtol=1e-5, atol=1e-6)


def test_partition_attention_is_timms_attention_2d_over_the_map_widening_it():
    from archcompiler.backends.torch.runtime import PartitionAttention

    torch.manual_seed(0)
    reference = _moved(Attention2d(16, 24, dim_head=8, expand_first=False, rel_pos_cls=_rel_pos(5)))
    ours = PartitionAttention(16, 2, 5, False, True, 24, 0.0).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), reference(x), rtol=1e-5, atol=1e-6)


def _one_layer(fields: str, shape: tuple) -> str:
    return (f"name: t\ninput: [{', '.join(map(str, shape))}]\nlayers:\n"
            f"  - {{name: a, op: window_attention, {fields}}}\n")


def test_the_op_agrees_with_torch_in_random_small_configurations():
    """Shape, parameters (timm's: qkv, proj, the bias table) and 2 x MACs against FlopCounterMode (the math
    backend: it sees QK^T and AV), windows, grids and the whole map, with and without out."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    r = random.Random("maxxvit")
    for _ in range(8):
        heads, win, layout = r.choice([1, 2, 3]), r.choice([2, 3]), r.choice(["maxxvit", "maxxvit_2d"])
        c, grid, out = heads * r.choice([2, 4]), r.choice([False, True]), r.choice([None, 5])
        shape = (c, win * r.randint(1, 3), win * r.randint(1, 3))
        fields = f"heads: {heads}, window: {win}, layout: {layout}, grid: {str(grid).lower()}" + \
            (f", out: {out}" if out else "")
        text = _one_layer(fields, shape)
        report = archcompiler.analyze(text)
        model = archcompiler.build(text, seed=0).eval()
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            y = model(torch.randn(2, *shape))
        assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"]) == (out or c, *shape[1:]), text
        assert sum(p.numel() for p in model.parameters()) == report["total"]["params"], text
        assert counter.get_total_flops() == 2 * 2 * report["total"]["macs"], text
        assert report["by_op"][MAXXVIT]["count"] == 1


def test_its_transient_memory_and_what_autograd_keeps_are_measured():
    """The op table's inference workspace is the measured peak beyond the op's input and output (batches of
    1 to 3); what autograd keeps, per sample, what its saved-tensor hooks see (batches of 2 and 3)."""
    from archcompiler.backends.torch.runtime import PartitionAttention
    from archcompiler.ir import OPS
    from archcompiler.measure.memory import LiveTensors

    def transient(module, x):
        with torch.no_grad(), LiveTensors(ignore=[*module.parameters(), *module.buffers()]) as tracker:
            tracker.hold(x)
            y = module.eval()(x)
        return (tracker.peak - 4 * x.numel() - y.untyped_storage().nbytes()) // 4

    def kept(module, x):
        own = {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers()]}
        seen = {}

        def pack(t):
            if t.untyped_storage()._cdata not in own:
                seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes() // 4
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module.train()(x)
        return sum(seen.values())

    op, r = OPS[MAXXVIT], random.Random("maxxvit memory")
    for _ in range(16):
        heads, win, grid, conv = r.choice([1, 2, 3]), r.choice([2, 3, 4]), r.choice([False, True]), r.choice([False, True])
        c, th = heads * r.choice([1, 2, 4]), r.choice([1, 2])
        h, w = win * th, win * (th if grid else r.choice([1, 2]))
        out = r.choice([c, 2 * c, 5])
        attrs = {"heads": heads, "window": win, "grid": grid, "conv": conv, "out": out, "dropout": 0.0}
        module = PartitionAttention(c, heads, win, grid, conv, out, 0.0)
        batch = r.choice([1, 2, 3])
        expected = op.batch_workspace(attrs, [(c, h, w)], (out, h, w), batch)
        assert transient(module, torch.randn(batch, c, h, w).permute(0, 2, 3, 1)) == expected, (batch, attrs, c, h, w)
        kinds, elements = op.saves(attrs, [(c, h, w)], (out, h, w))
        batch = r.choice([2, 3])
        x = torch.randn(batch, c, h, w, requires_grad=True).permute(0, 2, 3, 1)
        assert not kinds and kept(module, x) == batch * elements, (batch, attrs, c, h, w)


def test_a_networks_inference_peak_is_measured():
    text = ("name: t\ninput: [3, 16, 16]\nlayers:\n  - {name: stem, op: conv, out: 16, kernel: 3, stride: 2, padding: 1}\n"
            "  - {name: a, op: window_attention, heads: 2, window: 4, layout: maxxvit}\n"
            "  - {name: g, op: window_attention, heads: 2, window: 4, layout: maxxvit, grid: true}\n"
            "  - {name: c, op: window_attention, heads: 2, window: 8, layout: maxxvit_2d, out: 24}\n"
            "  - {name: p, op: global_avg_pool}\n  - {name: fc, op: linear, out: 3}\n")
    assert_memory_measured(archcompiler.load_spec(text), infer_batch=3, train_batch=None)


@pytest.mark.parametrize("fields, message", [
    ("heads: 2, window: 4, out: 8", "out needs layout maxxvit"),
    ("heads: 2, window: 4, layout: maxxvit, shift: 2", "no shift, pad or cosine"),
    ("heads: 2, window: 4, layout: maxxvit_2d, pad: true", "no shift, pad or cosine"),
], ids=["out-swin", "shift", "pad"])
def test_fields_timms_layouts_do_not_have_are_refused(fields, message):
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(_one_layer(fields, (8, 8, 8)))
    assert message in str(info.value)


def test_a_window_that_does_not_tile_the_map_is_a_located_error():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(_one_layer("heads: 2, window: 3, layout: maxxvit, grid: true", (8, 8, 8)))
    (problem,) = info.value.errors
    assert "grid 3x3 does not tile the map" in problem.message and "8x8x8" in problem.message and problem.line == 4


def test_the_generated_module_is_standalone_and_scripts():
    built = archcompiler.build(_one_layer("heads: 2, window: 4, layout: maxxvit, grid: true", (8, 8, 8)), seed=0)
    assert "class PartitionAttention(nn.Module):" in built.code and "archcompiler" not in built.code
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(built.eval())(x), built(x))


# ----------------------------------------------------------------------------- archc import


def test_archc_import_reads_timms_maxvit_and_coatnet_blocks_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process: the windows, the grid and CoAtNet's whole-map attention (its
    first block widening the map) become window_attention layers with timm's layouts, verified."""
    (tmp_path / "timm_like.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                           "from test_timm_maxxvit import tiny  # noqa: E402,F401\n")
    done = run_archc("import", "timm_like.py:tiny", "-o", "maxxvit.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "maxxvit.yaml").read_text()
    assert "layout: maxxvit," in text and "grid: true" in text and "layout: maxxvit_2d" in text
    assert "out: 32" in text
    assert_imports_back(tiny(), text)


@pytest.mark.slow
def test_archcs_own_built_moduleassert_imports_back():
    model = tiny()
    built = archcompiler.build(archcompiler.import_module(model), seed=0).eval()
    text = archcompiler.import_module(built, name="again")
    assert "layout: maxxvit," in text and "layout: maxxvit_2d" in text
    assert_imports_back(built, text)


class OtherBias(RelPosBias):
    pass


@pytest.mark.parametrize("kwargs, why", [
    ({"attention": {"head_first": False}}, "head_first"),
    ({"attention": {"proj_drop": 0.1}}, "proj_drop"),
    ({"coat": {"bias": False}}, "without the qkv or proj bias"),
], ids=["head-first", "proj-drop", "no-bias"])
def test_what_the_layouts_cannot_express_is_refused(kwargs, why):
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(tiny(**kwargs))
    assert why in str(info.value) and ("AttentionCl" in str(info.value) or "Attention2d" in str(info.value))


def test_a_position_bias_of_another_kind_is_refused():
    model = tiny()
    model.block.attn_block.attn.rel_pos.__class__ = OtherBias
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model)
    assert "block.attn_block.attn" in str(info.value) and "OtherBias relative position" in str(info.value)


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
