"""The functions every generated module carries: its source takes their text from here
(:func:`inspect.getsource`), so they are ordinary, importable and tested Python, while the file
``archc build --emit python`` writes stays standalone (it imports only torch).

Their text is written in the dialect the generated file needs, where TorchScript compiles it:
``typing.List`` in annotations, nothing that file does not import. Changing a function here changes
every generated module (and the golden files of ``tests/test_behaviour_golden.py``).

The attention classes over tokens live in :mod:`.runtime_tokens`, those over windows of a map in
:mod:`.runtime_windows`; this module imports them, so every helper is named ``runtime:Name`` and
:data:`IN_GENERATED` lists them all.
"""

import inspect
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the attention classes, kept in modules of their own: ops name them here, as runtime's
from .runtime_tokens import (
    BeitAttention,
    BiasedAttention,
    ClassAttention,
    LevitAttention,
    PatchAttention,
    RopeAttention,
    TalkingHeadAttention,
    TokenAttention,
)
from .runtime_windows import PartitionAttention, PatchMerging, WindowAttention


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


def check_clip(x: Tensor, expected: List[int], spec: str) -> None:
    """Refuse an input of another size than the spec's clips (C x T x H x W), with a message that says what to do."""
    if x.dim() != 5 or list(x.shape[1:]) != expected:
        c, t, h, w = expected
        raise ValueError(
            f"{spec} takes clips of {t}x{h}x{w}x{c} ({t} frames: a tensor N x {c} x {t} x {h} x {w}); got a tensor of "
            f"shape {tuple(x.shape)}. To build it for another size: archc build SPEC --set input=[C,T,H,W] "
            f"(in Python: build(spec, overrides={{'input': [C, T, H, W]}})).")


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


class FourierPosition(nn.Module):
    """The Fourier position encoding of an N x C x H x W map's grid (EdgeNeXt), computed as timm's
    ``PositionalEncodingFourier``: each position's row and column, counted from 1 and scaled to (0, 2 pi],
    over ``temperature`` ** (2 floor(i / 2) / hidden_dim) for i < hidden_dim, the even features' sine and
    the odd ones' cosine (the rows' hidden_dim features, then the columns'), through ``token_projection``
    (a 1 x 1 convolution, 2 hidden_dim -> dim). It reads the map for its size alone; the encoding is the same
    for every sample, so it is computed once and copied to the batch."""

    def __init__(self, hidden_dim: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.hidden_dim, self.temperature = hidden_dim, temperature
        self.token_projection = nn.Conv2d(2 * hidden_dim, dim, kernel_size=1)

    def axis(self, n: int, dim_t: Tensor) -> Tensor:
        """The features of the positions 1 to n along one axis: hidden_dim x n."""
        embed = torch.arange(1, n + 1, dtype=torch.float32, device=dim_t.device)
        pos = (embed / (embed[-1:] + 1e-6) * 6.283185307179586)[:, None] / dim_t
        return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).flatten(1).t()

    def forward(self, x: Tensor) -> Tensor:
        b, h, w = x.size(0), x.size(2), x.size(3)
        weight = self.token_projection.weight
        dim_t = torch.arange(self.hidden_dim, dtype=torch.int64, device=weight.device).to(torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden_dim)
        rows, cols = self.axis(h, dim_t)[:, :, None], self.axis(w, dim_t)[:, None, :]
        pos = torch.cat((rows.expand(self.hidden_dim, h, w), cols.expand(self.hidden_dim, h, w)), dim=0)
        pos = self.token_projection(pos.unsqueeze(0).to(weight.dtype))
        return pos.expand(b, -1, -1, -1).contiguous()


class CrossCovarianceAttention(nn.Module):
    """Cross-covariance attention over a sequence (N x S x D: XCiT's and EdgeNeXt's XCA), laid out and
    computed as timm's ``CrossCovarianceAttn``: ``qkv`` (D -> 3D, its bias optional) cut into q, k and v per
    head, each head's D / heads features as rows over the S tokens; q and k L2-normalised over the tokens,
    their D / heads x D / heads product (the channels' covariance, not the tokens') times the head's learned
    ``temperature``, softmax (dropout on it in training), times v, the heads joined and ``proj`` (D -> D)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = heads, dropout
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.size(0), x.size(1), x.size(2)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1).unbind(0)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        attn = attn.softmax(dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout, True)
        return self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, c))


def helper_source(*functions) -> str:
    """The text of these helpers as the generated module holds it: each preceded by two blank lines."""
    return "".join("\n\n" + inspect.getsource(f) for f in functions)


# the functions whose text a generated module may hold
IN_GENERATED = ("_log1m_softmax", "spec_loss", "check_input", "check_clip", "conv_act", "stochastic_depth", "WindowAttention",
                "PatchMerging", "TokenAttention", "GlobalResponseNorm", "ScaledStdConv2d", "PartitionAttention",
                "BiasedAttention", "LevitAttention", "RopeAttention", "GatedMlp", "BeitAttention",
                "TalkingHeadAttention", "ClassAttention", "PatchAttention", "FourierPosition",
                "CrossCovarianceAttention")

__all__ = ["spec_loss", "check_input", "check_clip", "conv_act", "stochastic_depth", "WindowAttention", "PatchMerging",
           "TokenAttention", "GlobalResponseNorm", "ScaledStdConv2d", "PartitionAttention",
           "BiasedAttention", "LevitAttention", "RopeAttention", "GatedMlp", "BeitAttention", "TalkingHeadAttention", "ClassAttention",
           "PatchAttention", "FourierPosition", "CrossCovarianceAttention", "helper_source"]
