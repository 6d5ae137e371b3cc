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
    the state_dict), and the position bias and the mask are added in place (the same values)."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, pad: bool, cosine: bool,
                 dropout: float, height: int, width: int, grid: bool = False, maxvit: bool = False) -> None:
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
        self.register_buffer("relative_position_index", index if maxvit else index.flatten())
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


def helper_source(*functions) -> str:
    """The text of these helpers as the generated module holds it: each preceded by two blank lines."""
    return "".join("\n\n" + inspect.getsource(f) for f in functions)


# the functions whose text a generated module may hold
IN_GENERATED = ("_log1m_softmax", "spec_loss", "check_input", "conv_act", "stochastic_depth", "WindowAttention",
                "PatchMerging", "TokenAttention")

__all__ = ["spec_loss", "check_input", "conv_act", "stochastic_depth", "WindowAttention", "PatchMerging",
           "TokenAttention", "helper_source"]
