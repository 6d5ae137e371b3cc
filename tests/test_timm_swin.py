"""timm's Swin (issue #32): ``window_attention`` with ``layout: timm`` is laid out as timm's Swin
``WindowAttention`` (torchvision's computation; the relative position index outside the state_dict), and
``archc import`` reads timm's Swin: its channels-last blocks (the cyclic shift, the cut into windows and
back, the map as H * W rows for the MLP), its PatchMerging, DropPath and the mean over the positions.

timm is no dependency: the references here are hand-written copies of timm's classes (the same attribute
names and forward) whose classes claim timm's module paths, as the importer reads a class by name and
package. The check against timm's own swin_tiny_patch4_window7_224 runs in a side environment with timm
(benchmarks/import_timm.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_imports_back, assert_memory_measured, run_archc

import archcompiler
from archcompiler import BackendError
from archcompiler.errors import GraphError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- timm's modules, by hand


def window_partition(x, window):
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, C)


def window_reverse(windows, window, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def relative_position_index(window):
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


class WindowAttention(nn.Module):
    """timm.models.swin_transformer.WindowAttention (timm 1.0), its unfused path."""

    def __init__(self, dim, num_heads, window_size=7, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.window_size = (window_size, window_size)
        self.window_area = window_size * window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window_size - 1) ** 2, num_heads) * 0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        x = self.attn_drop(self.softmax(attn)) @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B_, N, -1)))


class DropPath(nn.Module):
    """timm.layers.DropPath."""

    def __init__(self, drop_prob=0.0, scale_by_keep=True):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        noise = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            noise.div_(keep)
        return x * noise


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)
        self.norm, self.fc2, self.drop2 = nn.Identity(), nn.Linear(hidden, dim), nn.Dropout(0.0)

    def forward(self, x):
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


def shift_mask(size, window, shift):
    """timm's SwinTransformerBlock.get_attn_mask (over the map padded to a multiple of the window)."""
    size = -(-size // window) * window
    img_mask = torch.zeros((1, size, size, 1))
    cnt = 0
    for h in ((0, -window), (-window, -shift), (-shift, None)):
        for w in ((0, -window), (-window, -shift), (-shift, None)):
            img_mask[:, h[0]:h[1], w[0]:w[1], :] = cnt
            cnt += 1
    windows = window_partition(img_mask, window).view(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class SwinTransformerBlock(nn.Module):
    """timm's SwinTransformerBlock on an N x H x W x C map (the window shrunk to a map it covers, no shift then)."""

    def __init__(self, dim, size, heads, window, shift, drop_path=0.0, scale_by_keep=True):
        super().__init__()
        self.window_size, self.shift_size = (window, shift) if size > window else (size, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, self.window_size)
        self.drop_path1 = DropPath(drop_path, scale_by_keep) if drop_path else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.drop_path2 = DropPath(drop_path, scale_by_keep) if drop_path else nn.Identity()
        mask = shift_mask(size, self.window_size, self.shift_size) if self.shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def _attn(self, x):
        B, H, W, C = x.shape
        window, shift = self.window_size, self.shift_size
        shifted_x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
        pad_h, pad_w = (window - H % window) % window, (window - W % window) % window
        shifted_x = F.pad(shifted_x, (0, 0, 0, pad_w, 0, pad_h))
        _, Hp, Wp, _ = shifted_x.shape
        x_windows = window_partition(shifted_x, window).view(-1, window * window, C)
        attn_windows = self.attn(x_windows, mask=self.attn_mask).view(-1, window, window, C)
        shifted_x = window_reverse(attn_windows, window, Hp, Wp)[:, :H, :W, :].contiguous()
        return torch.roll(shifted_x, shifts=(shift, shift), dims=(1, 2)) if shift else shifted_x

    def forward(self, x):
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(B, -1, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)


class PatchMerging(nn.Module):
    """timm.models.swin_transformer.PatchMerging."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        B, H, W, C = x.shape
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        _, H, W, _ = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


WindowAttention.__module__ = "timm.models.swin_transformer"      # where timm's classes live: leaves of the trace
PatchMerging.__module__ = "timm.models.swin_transformer"
DropPath.__module__ = "timm.layers.drop"


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class Stage(nn.Module):
    def __init__(self, dim, size, heads, window, downsample, drop_path, scale_by_keep):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[SwinTransformerBlock(dim, size, heads, window, 0 if i % 2 == 0 else window // 2,
                                                           drop_path * i, scale_by_keep) for i in range(2)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class TinySwin(nn.Module):
    """timm's SwinTransformer, small: 2 x 2 patches of a 32 x 32 image (a 16 x 16 map, then 8 x 8) in 4 x 4
    windows shifted by 2 in every second block; a last stage whose window covers its 4 x 4 map."""

    def __init__(self, size=32, window=4, dims=(16, 32, 64), heads=(2, 4, 4), classes=10, drop_path=0.0,
                 scale_by_keep=True):
        super().__init__()
        self.INPUT_SHAPE = (3, size, size)
        self.patch_embed = PatchEmbed(2, dims[0])
        self.layers = nn.Sequential(*[Stage(d, size // 2 ** (i + 1), h, window, i > 0, drop_path, scale_by_keep)
                                      for i, (d, h) in enumerate(zip(dims, heads))])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        x = self.norm(self.layers(self.patch_embed(x)))
        return self.head(x.mean((1, 2)))


def tiny_swin(**kwargs) -> TinySwin:
    """The callable `archc import` runs (seeded, trained-like: the same weights in every process)."""
    torch.manual_seed(0)
    model = TinySwin(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


# ----------------------------------------------------------------------------- the op, layout: timm


ONE = """\
name: one
input: [3, 32, 32]
layers:
  - {name: embed, op: conv, out: 16, kernel: 2, stride: 2}
  - {name: attn, op: window_attention, heads: 2, window: 4, shift: 2, layout: timm}
"""


class OneBlock(nn.Module):
    """The reference of ONE: the conv, then timm's block's attention half (roll, windows, attention, back)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 2, 2)
        self.block = SwinTransformerBlock(16, 16, 2, 4, 2)

    def forward(self, x):
        return self.block._attn(self.embed(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_the_timm_layout_has_timms_keys_and_computes_its_output_params_and_flops():
    """The layer's state_dict is timm's WindowAttention's (no relative_position_index: timm keeps it outside);
    loaded strictly it gives the reference's output; parameters and FLOPs (FlopCounterMode) are the reference's."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    reference = OneBlock().eval()
    built = archcompiler.build(ONE, seed=0).eval()
    assert sorted(built.get_submodule("attn").state_dict()) == sorted(reference.block.attn.state_dict())
    state = {"embed.weight": reference.embed.weight, "embed.bias": reference.embed.bias,
             **{f"attn.{k}": v for k, v in reference.block.attn.state_dict().items()}}
    built.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-5)
    report = archcompiler.analyze(ONE)
    assert report["total"]["params"] == sum(p.numel() for p in [*reference.embed.parameters(),
                                                                 *reference.block.attn.parameters()])
    with torch.no_grad(), FlopCounterMode(display=False) as counted:
        reference(x[:1])
    assert counted.get_total_flops() == report["total"]["flops"]


def test_the_timm_layout_is_swins_window_attention_only():
    with pytest.raises(GraphError, match="no cosine, no grid"):
        archcompiler.analyze(ONE.replace("layout: timm", "layout: timm, cosine: true"))


def test_memory_matches_a_measurement():
    """The same computation as torchvision's layout (runtime.py's WindowAttention): the same inference peak."""
    headed = ONE + "  - {name: pool, op: global_avg_pool}\n  - {name: head, op: linear, out: 2}\n"
    assert_memory_measured(headed, infer_batch=2, train_batch=None)


# ----------------------------------------------------------------------------- archc import


def test_archc_import_reads_a_timm_swin_from_the_command_line(tmp_path):
    """As a user runs it, in a fresh process: the spec written is verified against the module (exit 0) and
    has timm's layout, the shift of every second block, patch merging and stochastic depth."""
    (tmp_path / "timm_like.py").write_text(f"import sys\nsys.path.insert(0, {str(HERE)!r})\n"
                                           "from test_timm_swin import tiny_swin  # noqa: E402,F401\n")
    done = run_archc("import", "timm_like.py:tiny_swin", "--arg", "drop_path=0.1", "-o", "swin.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    text = (tmp_path / "swin.yaml").read_text()
    for part in ("op: window_attention", "layout: timm", "shift: 2", "op: patch_merging", "op: stochastic_depth",
                 "op: global_avg_pool"):
        assert part in text, part
    assert_imports_back(tiny_swin(drop_path=0.1), text)


def test_archcs_own_built_module_imports_back_in_the_timm_layout():
    built = archcompiler.build(ONE, seed=0).eval()
    text = archcompiler.import_module(built, name="again")
    assert "layout: timm" in text and "shift: 2" in text
    assert_imports_back(built, text)


def test_a_map_the_windows_do_not_tile_is_refused():
    """timm pads after its shift (torchvision, and archc, before it): a map the windows do not tile is refused
    at the block, not imported otherwise."""
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(tiny_swin(size=36, dims=(16, 32)), name="odd")
    assert "layers.0.blocks.0" in str(info.value) and "pad" in str(info.value)


def test_a_mask_other_than_the_shifts_is_refused():
    model = tiny_swin()
    model.layers[0].blocks[1].attn_mask.zero_()
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(model, name="masked")
    assert "layers.0.blocks.1.attn" in str(info.value) and "a mask other than the shifted windows'" in str(info.value)


def test_a_drop_path_that_does_not_rescale_is_refused():
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(tiny_swin(drop_path=0.1, scale_by_keep=False), name="unscaled")
    assert "scale_by_keep" in str(info.value)


class Attention(nn.Module):
    """timm.models.beit.Attention's parameters: a qkv without bias, q_bias and v_bias of their own (k's zero)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


Attention.__module__ = "timm.models.beit"


class TinyBeit(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 4, 4)
        self.attn = Attention(16, 2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.attn(self.proj(x).flatten(2).transpose(1, 2)).mean(1))


def test_a_module_named_as_timms_that_lacks_what_archc_reads_is_refused_at_it():
    """A class that claims timm.models.beit's Attention but lacks its attributes (here proj_drop; BEiT itself
    imports: tests/test_beit.py) is refused at the module, saying what it lacks, never an internal error."""
    with pytest.raises(BackendError) as info:
        archcompiler.import_module(TinyBeit(), name="beit")
    message = str(info.value)
    assert "attn (Attention)" in message and "other than the one archc reads" in message and "proj_drop" in message


if __name__ == "__main__":          # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0"]))
