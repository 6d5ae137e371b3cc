"""The functions every generated module carries: its source takes their text from here
(:func:`inspect.getsource`), so they are ordinary, importable and tested Python, while the file
``archc build --emit python`` writes stays standalone (it imports only torch).

Their text is written in the dialect the generated file needs, where TorchScript compiles it:
``typing.List`` in annotations, nothing that file does not import. Changing a function here changes
every generated module (and the golden files of ``tests/test_behaviour_golden.py``).
"""

import inspect
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _log1m_softmax(z: Tensor) -> Tensor:
    """log(1 - softmax(z)) without cancellation: for the largest logit the sum over the other
    classes is taken directly; for the others 1 - p_i >= p_max >= 1/K, so nothing cancels."""
    m = z.max(dim=1, keepdim=True).values
    e = torch.exp(z - m)
    rest = torch.log((e.sum(dim=1, keepdim=True) - e).clamp_min(1e-38)) + m
    top = z.argmax(dim=1, keepdim=True)
    others = z.scatter(1, top, float("-inf"))
    rest = rest.scatter(1, top, torch.logsumexp(others, dim=1, keepdim=True))
    return rest - torch.logsumexp(z, dim=1, keepdim=True)


def spec_loss(kind: str, probabilities: bool, logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """One output's loss, computed stably from its logits (never softmax followed by log); ``probabilities``:
    the output's final op turns the logits into class probabilities (a softmax the forward leaves out).
    Targets: class indices (N,), or one-hot / probabilities (N, K), float or integer."""
    integer = not torch.is_floating_point(target)
    if kind == "cross_entropy":
        if target.dim() == logits.dim() and integer:      # integer one-hot
            target = target.to(logits.dtype)
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if integer and target.dim() == 1 and logits.shape[1] > 1:   # class indices
        target = F.one_hot(target.long(), logits.shape[1])
    target = target.reshape(logits.shape).to(logits.dtype)
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
    if probabilities:
        # binary cross-entropy of the softmax probabilities (the original 2-class GoogLeNet's
        # loss), averaged over units and batch
        log_p = F.log_softmax(logits, dim=1)
        return -(target * log_p + (1 - target) * _log1m_softmax(logits)).mean()
    return F.binary_cross_entropy_with_logits(logits, target)


def check_input(x: Tensor, expected: List[int], spec: str) -> None:
    """Refuse an input of another size than the spec's, with a message that says what to do."""
    if x.dim() != 4 or list(x.shape[1:]) != expected:
        c, h, w = expected
        raise ValueError(
            f"{spec} takes images of {h}x{w}x{c} (a tensor N x {c} x {h} x {w}); got a tensor of shape "
            f"{tuple(x.shape)}. To build it for another size: archc build SPEC --set input=[C,H,W] "
            f"(in Python: build(spec, overrides={{'input': [C, H, W]}})).")


def conv_act(x: Tensor, conv: nn.Conv2d, act: str) -> Tensor:
    """A convolution with its activation fused (archc --optimize): one oneDNN kernel on CPU, the
    convolution and then the activation in place elsewhere (and under torch.compile, which fuses)."""
    if x.device.type == "cpu" and not x.requires_grad and not torch.compiler.is_compiling() \
            and torch.backends.mkldnn.is_available():
        return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, list(conv.padding),
                                                        list(conv.stride), list(conv.dilation), conv.groups,
                                                        act, [], "")
    return F.relu(conv(x), inplace=True)


def stochastic_depth(x: Tensor, p: float, row: bool, training: bool) -> Tensor:
    """Stochastic depth as torchvision.ops.stochastic_depth computes it: in training, each sample's
    (row) or the batch's value dropped with probability p, the rest scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.dim() - 1) if row else [1] * x.dim()
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    return x * noise


class WindowAttention(nn.Module):
    """Swin's shifted window attention on a channels-last map (N x H x W x C), as torchvision's
    ShiftedWindowAttention (``cosine``: ShiftedWindowAttentionV2) computes it, with its parameters and
    buffers under its names and in its order; the relative position index is built here. The map's
    size is known when the module is made: the shifted windows' mask is made once (a buffer outside
    the state_dict), and the position bias and the mask are added in place (the same values). ``timm``:
    the relative position index stays outside the state_dict too, as timm's Swin keeps it."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, pad: bool, cosine: bool,
                 dropout: float, height: int, width: int, grid: bool = False, maxvit: bool = False,
                 timm: bool = False) -> None:
        super().__init__()
        self.heads, self.window, self.cosine, self.dropout, self.grid, self.maxvit = heads, window, cosine, dropout, grid, maxvit
        self.dim, self.size = dim, [height, width]      # plain numbers: a trace records no shape checks
        span = torch.arange(-(window - 1), window, dtype=torch.float32)
        if cosine:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((heads, 1, 1))))
            table = torch.stack(torch.meshgrid([span, span], indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
            table = table / (window - 1) * 8           # offsets scaled to [-8, 8], then log-spaced
            self.register_buffer("relative_coords_table", torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0)
        else:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid([torch.arange(window), torch.arange(window)], indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        index = relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]
        self.register_buffer("relative_position_index", index if maxvit else index.flatten(), persistent=not timm)
        if maxvit:                   # MaxViT's RelativePositionalMultiHeadAttention (its names, a 2D index)
            self.to_qkv = nn.Linear(dim, 3 * dim)
            self.merge = nn.Linear(dim, dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
        if cosine:
            self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, heads, bias=False))
        ph, pw = -(-height // window) * window, -(-width // window) * window
        # no shift along an axis the window covers whole (torchvision's rule)
        self.shift = [0 if window >= ph else shift, 0 if window >= pw else shift]
        self.padded = [ph, pw]
        mask = None
        if self.shift[0] + self.shift[1] > 0:  # positions rolled in from the other side attend only among themselves
            sh, sw = self.shift
            labels = torch.zeros((ph, pw))
            count = 0
            for h0, h1 in ((0, ph - window), (ph - window, ph - sh), (ph - sh, ph)):
                for w0, w1 in ((0, pw - window), (pw - window, pw - sw), (pw - sw, pw)):
                    labels[h0:h1, w0:w1] = count
                    count += 1
            labels = labels.view(ph // window, window, pw // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
            mask = labels.unsqueeze(1) - labels.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0).unsqueeze(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def position_bias(self) -> Tensor:
        """heads x W^2 x W^2: the table (V1) or the MLP's output (V2) at every pair of positions."""
        n = self.window * self.window
        if self.cosine:
            table = self.cpb_mlp(self.relative_coords_table).view(-1, self.heads)
            return 16 * torch.sigmoid(table.t()[:, self.relative_position_index].view(self.heads, n, n))
        return self.relative_position_bias_table.t()[:, self.relative_position_index.view(-1)].view(self.heads, n, n)

    def forward(self, x: Tensor) -> Tensor:
        b, (h, w), c = x.shape[0], self.size, self.dim
        win, (ph, pw), (sh, sw) = self.window, self.padded, self.shift
        if ph > h or pw > w:
            x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h))
        if sh + sw > 0:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        windows = (ph // win) * (pw // win)
        if self.grid:                # MaxViT's grid: each group the positions (ph // win, pw // win) apart
            x = x.view(b, win, ph // win, win, pw // win, c).permute(0, 2, 4, 1, 3, 5).reshape(b * windows, win * win, c)
        else:
            x = x.view(b, ph // win, win, pw // win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b * windows, win * win, c)
        if self.maxvit:
            qkv = self.to_qkv(x)
        else:
            qkv_bias = self.qkv.bias
            if self.cosine:          # V2 has no key bias
                qkv_bias = torch.cat([qkv_bias[:c], torch.zeros_like(qkv_bias[c:2 * c]), qkv_bias[2 * c:]])
            qkv = F.linear(x, self.qkv.weight, qkv_bias)
        qkv = qkv.reshape(x.size(0), x.size(1), 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.cosine:
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=4.605170185988092).exp()    # log(100)
        elif self.maxvit:            # MaxViT scales k, by the whole feature dimension
            attn = q.matmul((k * c ** -0.5).transpose(-2, -1))
        else:
            attn = (q * (c // self.heads) ** -0.5).matmul(k.transpose(-2, -1))
        attn.add_(self.position_bias())
        if self.attn_mask is not None:
            attn.view(b, windows, self.heads, win * win, win * win).add_(self.attn_mask)
        attn = F.softmax(attn, dim=-1)
        if self.dropout > 0.0:
            attn = F.dropout(attn, p=self.dropout, training=self.training)
        x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
        x = self.merge(x) if self.maxvit else self.proj(x)
        if self.grid:
            x = x.view(b, ph // win, pw // win, win, win, c).permute(0, 3, 1, 4, 2, 5).reshape(b, ph, pw, c)
        else:
            x = x.view(b, ph // win, pw // win, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sh + sw > 0:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        if ph > h or pw > w:         # cropped to a tensor of its own (a view would keep the padded map alive)
            return x[:, :h, :w, :].clone(memory_format=torch.contiguous_format)
        return x


class PatchMerging(nn.Module):
    """Swin's patch merging on a channels-last map, as torchvision's PatchMerging (``norm_after``:
    PatchMergingV2): each 2 x 2 group of positions concatenated (an odd side padded with zeros), a
    LayerNorm and a Linear without bias (V2: the Linear, then the LayerNorm)."""

    def __init__(self, dim: int, out: int, norm_after: bool, eps: float) -> None:
        super().__init__()
        self.norm_after = norm_after
        self.reduction = nn.Linear(4 * dim, out, bias=False)
        self.norm = nn.LayerNorm(out if norm_after else 4 * dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1], x.shape[2]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        if self.norm_after:
            return self.norm(self.reduction(x))
        return self.reduction(self.norm(x))


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


class GlobalResponseNorm(nn.Module):
    """Global response normalisation of an N x C x H x W map (ConvNeXt V2), computed as timm's
    ``GlobalResponseNorm`` computes it channels-first: each channel's L2 norm over the positions, over
    the mean of those norms across the channels (plus ``eps``), scales the map; the learned per-channel
    ``weight`` times that, plus ``bias``, is added to the input."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        x_g = x.norm(p=2, dim=[2, 3], keepdim=True)
        x_n = x_g / (x_g.mean(dim=1, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(1, -1, 1, 1), self.weight.view(1, -1, 1, 1), x * x_n)


class ScaledStdConv2d(nn.Conv2d):
    """A convolution with scaled weight standardisation (NF-ResNets, NFNets), computed as timm's
    ``ScaledStdConv2d``: at each call the weight is standardised per output channel (F.batch_norm over
    its fan-in, ``eps`` added to the variance) and scaled by the learned ``gain`` times gamma / sqrt(fan-in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: List[int], stride: List[int],
                 padding: str | List[int], dilation: List[int], groups: int, bias: bool, gamma: float,
                 eps: float) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PartitionAttention(nn.Module):
    """Multi-head attention within the windows (``grid``: the grid groups) of a channels-last map
    (N x H x W x C), laid out and computed as timm's MaxViT / CoAtNet attention (timm/models/maxxvit.py):
    ``AttentionCl`` (``conv`` false: ``qkv`` and ``proj`` Linears) or ``Attention2d`` (``conv``: 1 x 1
    convolutions, the same products), with ``rel_pos.relative_position_bias_table`` (timm's RelPosBias;
    its index a buffer outside the state_dict, as timm's). qkv's channels hold each head's q, k and v in
    turn (timm's head_first); scaled dot-product attention takes the window's position bias as its mask;
    the heads are joined and ``proj`` maps them to ``out`` channels."""

    def __init__(self, dim: int, heads: int, window: int, grid: bool, conv: bool, out: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.window, self.grid, self.dropout = heads, window, grid, dropout
        if conv:
            self.qkv = nn.Conv2d(dim, 3 * dim, 1)
            self.proj = nn.Conv2d(dim, out, 1)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, out)
        self.rel_pos = nn.Module()
        self.rel_pos.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.rel_pos.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid([torch.arange(window), torch.arange(window)], indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        index = relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]
        self.register_buffer("relative_position_index", index.flatten(), persistent=False)

    def attend(self, qkv: Tensor, n: int) -> Tensor:
        """The heads' attention from the projection (q, k and v views of it, freed on return)."""
        q, k, v = qkv.view(qkv.size(0), n, self.heads, -1).transpose(1, 2).chunk(3, dim=3)
        bias = self.rel_pos.relative_position_bias_table[self.relative_position_index]
        bias = bias.view(n, n, self.heads).permute(2, 0, 1).unsqueeze(0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.size(0), x.size(1), x.size(2), x.size(3)
        p, n = self.window, self.window * self.window
        if self.grid:                # each group p x p positions h // p and w // p apart
            x = x.view(b, p, h // p, p, w // p, c).permute(0, 2, 4, 1, 3, 5)
        else:
            x = x.view(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
        x = x.clone(memory_format=torch.contiguous_format).view(-1, n, c)     # one copy, whatever the input's layout
        g = x.size(0)
        x = self.attend(F.linear(x, self.qkv.weight.flatten(1), self.qkv.bias), n)
        x = F.linear(x.transpose(1, 2).reshape(g, n, c), self.proj.weight.flatten(1), self.proj.bias)
        o = x.size(-1)
        x = x.view(b, h // p, w // p, p, p, o)
        if self.grid:
            return x.permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, o)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, o)

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


class GatedMlp(nn.Module):
    """A gated MLP over a sequence (SwiGLU: EVA-02's), laid out and computed as timm's ``GluMlp``
    (``packed``: one ``fc1`` whose output's halves are the gate and the value; ``gate_last``: the second
    half is the gate) or timm's ``SwiGLU`` (``fc1_g`` the gate, ``fc1_x`` the value): the activation of
    the gate times the value, an optional LayerNorm ``norm`` on that (EVA-02's scale_mlp), ``fc2``."""

    def __init__(self, dim: int, hidden: int, out: int, act: str, packed: bool, gate_last: bool, bias: bool,
                 norm_eps: float) -> None:
        super().__init__()
        self.act, self.gate_last = act, gate_last
        if packed:
            self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        else:
            self.fc1_g = nn.Linear(dim, hidden, bias=bias)
            self.fc1_x = nn.Linear(dim, hidden, bias=bias)
        self.norm = nn.LayerNorm(hidden, eps=norm_eps) if norm_eps > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, out, bias=bias)

    def gate(self, x: Tensor) -> Tensor:
        if self.act == "sigmoid":
            return torch.sigmoid(x)
        if self.act == "gelu":
            return F.gelu(x)
        return F.silu(x)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "fc1"):        # (resolved when TorchScript compiles it: the layout's own Linears)
            x1, x2 = self.fc1(x).chunk(2, dim=-1)
            x = x1 * self.gate(x2) if self.gate_last else self.gate(x1) * x2
        else:
            x = self.gate(self.fc1_g(x)) * self.fc1_x(x)
        return self.fc2(self.norm(x))


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


def helper_source(*functions) -> str:
    """The text of these helpers as the generated module holds it: each preceded by two blank lines."""
    return "".join("\n\n" + inspect.getsource(f) for f in functions)


# the functions whose text a generated module may hold
IN_GENERATED = ("_log1m_softmax", "spec_loss", "check_input", "conv_act", "stochastic_depth", "WindowAttention",
                "PatchMerging", "TokenAttention", "GlobalResponseNorm", "ScaledStdConv2d", "PartitionAttention",
                "BiasedAttention", "RopeAttention", "GatedMlp", "BeitAttention",
                "TalkingHeadAttention", "ClassAttention", "PatchAttention")

__all__ = ["spec_loss", "check_input", "conv_act", "stochastic_depth", "WindowAttention", "PatchMerging",
           "TokenAttention", "GlobalResponseNorm", "ScaledStdConv2d", "PartitionAttention",
           "BiasedAttention", "RopeAttention", "GatedMlp", "BeitAttention", "TalkingHeadAttention", "ClassAttention",
           "PatchAttention", "helper_source"]
