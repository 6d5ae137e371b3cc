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


def spec_loss(kind: str, final: str, logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """One output's loss, computed stably from its logits (never softmax followed by log).
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
    if final == "softmax":
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


def helper_source(*functions) -> str:
    """The text of these helpers as the generated module holds it: each preceded by two blank lines."""
    return "".join("\n\n" + inspect.getsource(f) for f in functions)


# the functions whose text a generated module may hold
IN_GENERATED = ("_log1m_softmax", "spec_loss", "check_input", "conv_act", "stochastic_depth")

__all__ = ["spec_loss", "check_input", "conv_act", "stochastic_depth", "helper_source"]
