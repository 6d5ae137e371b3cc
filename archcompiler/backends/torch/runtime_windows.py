"""Generated modules' helper classes for attention within windows of a map: Swin's shifted windows
(:class:`WindowAttention`, with :class:`PatchMerging` between its stages) and MaxViT's window and grid
partitions (:class:`PartitionAttention`).

Their text is copied into generated modules (see :mod:`archcompiler.backends.torch.runtime`, which holds
the list and from which ops name them): written in the dialect the generated file needs, where
TorchScript compiles it (``typing.List`` in annotations, nothing that file does not import). Changing
a class here changes every generated module that uses it (and the golden files of
``tests/test_behaviour_golden.py``).
"""


import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
