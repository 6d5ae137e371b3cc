"""Generated modules' helper classes for attention over a sequence of tokens, each laid out as the
module archc imports (timm's or torchvision's) lays out its parameters: ViT's (:class:`TokenAttention`),
EfficientFormer's with a bias table (:class:`BiasedAttention`), LeViT's (:class:`LevitAttention`), EVA's rotary (:class:`RopeAttention`),
BEiT's (:class:`BeitAttention`), CaiT's talking heads and class attention, and patch attention.

Their text is copied into generated modules (see :mod:`archcompiler.backends.torch.runtime`, which holds
the list and from which ops name them): written in the dialect the generated file needs, where
TorchScript compiles it (``typing.List`` in annotations, nothing that file does not import). Changing
a class here changes every generated module that uses it (and the golden files of
``tests/test_behaviour_golden.py``).
"""

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TokenAttention(nn.Module):
    """Multi-head self-attention over a sequence (N x S x D), laid out and computed as timm's
    ``Attention`` (ViT, DeiT): ``qkv`` (D -> 3D, its bias optional) cut into q, k and v per head,
    scaled dot-product attention (dropout on its weights in training), the heads joined and ``proj``
    (D -> D). q, k and v are views of the projection, which is freed once the attention has run."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attend(self, qkv: Tensor) -> Tensor:
        q, k, v = qkv.unbind(0)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        x = self.attend(self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class BiasedAttention(nn.Module):
    """Multi-head self-attention over the positions of an R x R grid (N x R^2 x D, row by row) with a learned
    bias per head for each relative offset of two positions, laid out and computed as timm's EfficientFormer
    ``Attention``: ``qkv`` (D -> heads x (2 key_dim + value_dim), each head's q, k and v side by side), the
    scores (q k^T scaled by key_dim^-0.5) plus ``attention_biases`` (heads x R^2) read at
    ``attention_bias_idxs`` (R^2 x R^2: the offset's |dy| R + |dx|), softmax, times v, the heads joined and
    ``proj`` (heads x value_dim -> D)."""

    def __init__(self, dim: int, heads: int, key_dim: int, value_dim: int, side: int) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim, self.scale = heads, key_dim, value_dim, key_dim ** -0.5
        self.qkv = nn.Linear(dim, heads * (2 * key_dim + value_dim))
        self.proj = nn.Linear(heads * value_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, side * side))
        pos = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).flatten(1)
        offset = (pos[:, :, None] - pos[:, None, :]).abs()
        self.register_buffer("attention_bias_idxs", offset[0] * side + offset[1])

    def forward(self, x: Tensor) -> Tensor:
        b, n = x.size(0), x.size(1)
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class RopeAttention(nn.Module):
    """Multi-head self-attention with rotary position embeddings (EVA-02), laid out and computed as timm's
    ``EvaAttention``: one ``qkv`` Linear without bias, ``q_bias`` and ``v_bias`` of their own (k's zero: a
    buffer outside the state_dict, as timm's), or (``fused`` false) ``q_proj``, ``k_proj`` (no bias) and
    ``v_proj``; scaled dot-product attention, an optional LayerNorm ``norm``
    on the heads' output, ``proj``. The tokens after the first ``prefix`` are a ``height`` x ``width`` grid
    of patches, row by row: their q and k are rotated by the sine and cosine of each position times the
    frequency bands (timm's RotaryEmbeddingCat with ``in_pixels=False``, made here from the grid as timm
    makes it: a buffer outside the state_dict). ``ref_height`` / ``ref_width`` (0: none) rescale the
    positions onto that grid (EVA's fine-tuning at another size); ``xy`` swaps the axes; ``half`` rotates the halves of
    each head (else neighbouring pairs)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, norm_eps: float, dropout: float, prefix: int,
                 height: int, width: int, ref_height: int, ref_width: int, temperature: float, offset: float,
                 xy: bool, half: bool, fused: bool = True) -> None:
        super().__init__()
        self.num_heads, self.dropout, self.prefix, self.half = heads, dropout, prefix, half
        # the table's settings, as plain numbers (archc's import reads them back)
        self.grid, self.ref_grid = [height, width], [ref_height, ref_width]
        self.temperature, self.offset, self.xy = temperature, offset, xy
        if not fused:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=False)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.q_bias, self.k_bias, self.v_bias = None, None, None
        elif qkv_bias:
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.q_bias, self.k_bias, self.v_bias = None, None, None
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if norm_eps > 0 else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        bands = dim // heads // 4
        freqs = 1.0 / (temperature ** (torch.arange(0, bands, dtype=torch.int64).to(torch.float32) / bands))
        shape, ref = [height, width], [ref_height, ref_width]
        if xy:
            shape, ref = [width, height], [ref_width, ref_height]
        t = [torch.arange(s, dtype=torch.int64).to(torch.float32) + offset for s in shape]
        if ref_height and ref_width:
            t = [x / f * r for x, f, r in zip(t, shape, ref)]
        grid = torch.stack(torch.meshgrid(t, indexing="xy" if xy else "ij"), dim=-1).unsqueeze(-1) * freqs
        sin, cos = grid.sin().flatten(-2).flatten(0, -2), grid.cos().flatten(-2).flatten(0, -2)
        sin = torch.cat([sin, sin], -1) if half else sin.repeat_interleave(2, -1)
        cos = torch.cat([cos, cos], -1) if half else cos.repeat_interleave(2, -1)
        self.register_buffer("rope", torch.cat([sin, cos], -1), persistent=False)

    def rotate(self, x: Tensor) -> Tensor:
        """The patch tokens' q or k (N x heads x H * W x head dim) rotated by their positions."""
        sin, cos = self.rope.chunk(2, -1)
        if self.half:
            x1, x2 = x.chunk(2, dim=-1)
            turned = torch.cat([-x2, x1], dim=-1)
        else:
            turned = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
        return x * cos + turned * sin

    def project(self, x: Tensor) -> List[Tensor]:
        """q, k and v, each N x heads x S x head dim (fused: views of one projection)."""
        b, n = x.size(0), x.size(1)
        if not hasattr(self, "qkv"):        # (resolved when TorchScript compiles it: the layout's own Linears)
            return [self.q_proj(x).reshape(b, n, self.num_heads, -1).transpose(1, 2),
                    self.k_proj(x).reshape(b, n, self.num_heads, -1).transpose(1, 2),
                    self.v_proj(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)]
        q_bias, k_bias, v_bias = self.q_bias, self.k_bias, self.v_bias
        if q_bias is not None and k_bias is not None and v_bias is not None:
            qkv = F.linear(x, self.qkv.weight, torch.cat((q_bias, k_bias, v_bias)))
        else:
            qkv = self.qkv(x)
        return qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        q, k, v = self.project(x)
        p = self.prefix
        q = torch.cat([q[:, :, :p, :], self.rotate(q[:, :, p:, :])], dim=2)
        k = torch.cat([k[:, :, :p, :], self.rotate(k[:, :, p:, :])], dim=2)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(self.norm(x.transpose(1, 2).reshape(b, n, c)))


class BeitAttention(nn.Module):
    """Multi-head self-attention over a class token and an ``height`` x ``width`` grid of patch tokens
    after it, row by row (N x (1 + H W) x D), laid out and computed as timm's BEiT ``Attention``
    (timm/models/beit.py): one ``qkv`` Linear without bias, ``q_bias`` and ``v_bias`` of their own (k's
    zero: a buffer outside the state_dict, as timm's), and (``height`` > 0) ``relative_position_bias_table``:
    per head a bias for each relative offset of two patches ((2H - 1)(2W - 1) of them) and three more (the
    class token to a patch, a patch to the class token, the class token to itself), read at
    ``relative_position_index`` (made here as timm makes it, outside the state_dict) and given to scaled
    dot-product attention as its mask; the heads joined, ``proj``."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, dropout: float, height: int, width: int) -> None:
        super().__init__()
        self.num_heads, self.dropout, self.grid = heads, dropout, [height, width]
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias, self.k_bias, self.v_bias = None, None, None
        if height > 0:
            offsets = (2 * height - 1) * (2 * width - 1)
            self.relative_position_bias_table = nn.Parameter(torch.zeros(offsets + 3, heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            coords = torch.stack(torch.meshgrid([torch.arange(height), torch.arange(width)], indexing="ij")).flatten(1)
            relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
            index = torch.zeros((height * width + 1, height * width + 1), dtype=torch.long)
            index[1:, 1:] = (relative[:, :, 0] + height - 1) * (2 * width - 1) + relative[:, :, 1] + width - 1
            index[0, 0:] = offsets
            index[0:, 0] = offsets + 1
            index[0, 0] = offsets + 2
            self.register_buffer("relative_position_index", index, persistent=False)
        else:
            self.relative_position_bias_table, self.relative_position_index = None, None
        self.proj = nn.Linear(dim, dim)

    def attend(self, qkv: Tensor, n: int) -> Tensor:
        """The heads' attention from the projection (q, k and v views of it, freed on return)."""
        q, k, v = qkv.unbind(0)
        p = self.dropout if self.training else 0.0
        table, index = self.relative_position_bias_table, self.relative_position_index
        if table is not None and index is not None:
            bias = table.t()[:, index.view(-1)].view(1, self.num_heads, n, n)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)

    def project(self, x: Tensor) -> Tensor:
        """q, k and v of every token (N x S x 3D), k's bias zero."""
        q_bias, k_bias, v_bias = self.q_bias, self.k_bias, self.v_bias
        if q_bias is not None and k_bias is not None and v_bias is not None:
            return F.linear(x, self.qkv.weight, torch.cat((q_bias, k_bias, v_bias)))
        return self.qkv(x)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        x = self.attend(self.project(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4), n)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class TalkingHeadAttention(nn.Module):
    """Multi-head self-attention with talking heads (CaiT), laid out and computed as timm's
    ``TalkingHeadAttn``: ``qkv`` (D -> 3D, its bias optional) cut into q, k and v per head, q scaled by
    head_dim^-0.5, the scores q k^T mixed across the heads by ``proj_l`` (heads -> heads) before the softmax
    and the probabilities by ``proj_w`` after it (dropout on them in training), times v, the heads joined
    and ``proj`` (D -> D). The scores are computed, not fused: the heads' mixing sits between the product
    and the softmax."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout, self.scale = heads, dropout, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_l = nn.Linear(heads, heads)
        self.proj_w = nn.Linear(heads, heads)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = attn.softmax(dim=-1)
        attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout, True)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class ClassAttention(nn.Module):
    """CaiT's class attention, laid out and computed as timm's ``ClassAttn``: the first token of the
    sequence (N x S x D: the class token before the patches) is the one query (``q``), every token a key
    (``k``) and a value (``v``), each D -> D (their biases optional), scaled dot-product attention per head
    (dropout on its weights in training), the heads joined and ``proj``: N x 1 x D, the class token's
    update."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        h = self.num_heads
        q = self.q(x[:, 0]).unsqueeze(1).reshape(b, 1, h, c // h).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        v = self.v(x).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(b, 1, c))


class PatchAttention(nn.Module):
    """Multi-head self-attention among the positions of an N x C x H x W map that share their offset within
    p x p patches (MobileViT's transformer): the map unfolded, as timm's ``MobileVitBlock`` unfolds it, into
    N p^2 sequences (one per offset) of the H/p W/p positions at that offset, attention laid out and computed
    as timm's ``Attention`` (``qkv`` D -> 3D, its bias optional; scaled dot-product attention; ``proj``) on
    each, folded back to the map."""

    def __init__(self, dim: int, heads: int, patch: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.patch, self.dropout = heads, dim // heads, patch, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attend(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return x.transpose(1, 2).reshape(b, n, c)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size(0), x.size(1), x.size(2), x.size(3)
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, (h // p) * (w // p), c)
        x = self.proj(self.attend(x))
        return x.reshape(b, p, p, h // p, w // p, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)


class LevitAttention(nn.Module):
    """LeViT's attention over the positions of an R x R grid (N x R^2 x D, row by row; with ``conv`` a map,
    N x D x R x R), laid out and computed as timm's LeViT ``Attention`` (``stride`` 1) and
    ``AttentionDownsample``: each projection a LinearNorm (``linear``, no bias, then ``bn``, a BatchNorm1d over
    the N x S tokens as one batch; on a map a 1 x 1 convolution and a BatchNorm2d); ``qkv`` (each head's q, k
    and v side by side), or ``kv`` and ``q.ln`` on every stride-th row and column of the grid; the scores (q k^T
    scaled by key_dim^-0.5) plus ``attention_biases`` (heads x R^2) read at ``attention_bias_idxs`` (the
    offset's |dy| R + |dx|: a buffer that is not saved, as timm's), softmax, times v, the heads joined,
    ``proj.act`` and ``proj.ln`` (heads x value_dim -> out)."""

    def __init__(self, dim: int, heads: int, key_dim: int, value_dim: int, side: int, stride: int, out: int,
                 act: nn.Module, conv: bool = False) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim, self.scale = heads, key_dim, value_dim, key_dim ** -0.5
        self.stride, self.resolution, self.use_conv = stride, (side, side), conv
        if stride == 1:
            self.qkv = self.linear_norm(dim, heads * (2 * key_dim + value_dim), conv)
        else:
            self.kv = self.linear_norm(dim, heads * (key_dim + value_dim), conv)
            self.q = nn.Module()
            self.q.ln = self.linear_norm(dim, heads * key_dim, conv)
        self.proj = nn.Module()
        self.proj.act, self.proj.ln = act, self.linear_norm(heads * value_dim, out, conv)
        self.attention_biases = nn.Parameter(torch.zeros(heads, side * side))
        keys = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).flatten(1)
        queries = torch.stack(torch.meshgrid(torch.arange(0, side, stride), torch.arange(0, side, stride),
                                             indexing="ij")).flatten(1)
        offset = (queries[:, :, None] - keys[:, None, :]).abs()
        self.register_buffer("attention_bias_idxs", offset[0] * side + offset[1], persistent=False)

    @staticmethod
    def linear_norm(i: int, o: int, conv: bool) -> nn.Module:
        m = nn.Module()
        if conv:
            m.linear, m.bn = nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o)
        else:
            m.linear, m.bn = nn.Linear(i, o, bias=False), nn.BatchNorm1d(o)
        return m

    @staticmethod
    def normed(m: nn.Module, x: Tensor) -> Tensor:
        x = m.linear(x)
        return m.bn(x) if x.dim() == 4 else m.bn(x.flatten(0, 1)).reshape_as(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_conv:
            return self.on_map(x)
        b, n, c = x.size(0), x.size(1), x.size(2)
        h, kd = self.num_heads, self.key_dim
        if self.stride == 1:
            q, k, v = self.normed(self.qkv, x).view(b, n, h, -1).split([kd, kd, self.val_dim], dim=3)
            q = q.permute(0, 2, 1, 3)
        else:
            k, v = self.normed(self.kv, x).view(b, n, h, -1).split([kd, self.val_dim], dim=3)
            r, s = self.resolution[0], self.stride
            sub = x.view(b, r, r, c)[:, ::s, ::s].reshape(b, -1, c)
            q = self.normed(self.q.ln, sub).view(b, -1, h, kd).permute(0, 2, 1, 3)
        attn = q @ k.permute(0, 2, 3, 1) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        x = (attn @ v.permute(0, 2, 1, 3)).transpose(1, 2).reshape(b, -1, h * self.val_dim)
        return self.normed(self.proj.ln, self.proj.act(x))

    def on_map(self, x: Tensor) -> Tensor:
        """timm's use_conv: q, k and v per head as rows over the H W positions, the queries' map an average pool
        of one pixel at the stride."""
        b, hh, ww = x.size(0), x.size(2), x.size(3)
        h, kd, s = self.num_heads, self.key_dim, self.stride
        if s == 1:
            q, k, v = self.normed(self.qkv, x).view(b, h, -1, hh * ww).split([kd, kd, self.val_dim], dim=2)
        else:
            k, v = self.normed(self.kv, x).view(b, h, -1, hh * ww).split([kd, self.val_dim], dim=2)
            q = self.normed(self.q.ln, F.avg_pool2d(x, 1, s)).view(b, h, kd, -1)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        attn = attn.softmax(dim=-1)
        x = (v @ attn.transpose(-2, -1)).reshape(b, -1, (hh - 1) // s + 1, (ww - 1) // s + 1)
        return self.normed(self.proj.ln, self.proj.act(x))
