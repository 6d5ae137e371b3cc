"""Max pooling (``op: max_pool``)."""

from __future__ import annotations

import math
from typing import Literal

from . import _pooling
from ._base import FromOnnx, FromTorch, LayerOp, Op, OpDef, Style, TorchCode, kxs, per_map, strided, window_elements

KIND = "max_pool2d"


class MaxPool(_pooling.Pool):
    """Max pooling over windows of the map (nn.MaxPool2d)."""

    op: Literal["max_pool"]


OP = Op(
    layers=(LayerOp(MaxPool, _pooling.lower(KIND)),),
    kinds=(OpDef(
        KIND, _pooling.shape, attrs=("kernel", "stride", "padding", "ceil_mode"), window=_pooling.window,
        depth="pooling", patch=kxs, elementwise=window_elements,
        # int64 indices, dropped at once in eval, kept for backward in training; TensorFlow's 'same' where PyTorch
        # cannot pad: the padded copy made before it (what autograd then keeps instead of the input)
        workspace=lambda a, i, o: 2 * math.prod(o) + _pooling.padded_elements(a, i),
        saves=lambda a, i, o: ((), _pooling.padded_elements(a, i) + 2 * math.prod(o))
        if _pooling.padded_before(a, i) else (("input",), 2 * math.prod(o)),
        backward_workspace=_pooling.padded_gradient,
        # the calibration's strided pool is indexed by its input size
        latency=per_map(("max_pool", "max_pool_s2"), lambda a: "max_pool_s2" if strided(a) else "max_pool",
                        window_elements, by_input=strided),
        torch=TorchCode(None, _pooling.call("max_pool2d"), shaped_call=_pooling.call("max_pool2d")), style=Style("box", "#fde0c5")),),
    from_torch={"MaxPool2d": FromTorch(KIND, _pooling.from_torch("max_pool")),
                "fn:max_pool2d": FromTorch(KIND, _pooling.from_torch("max_pool"),
                                           ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                            "return_indices"))},
    from_onnx={"MaxPool": FromOnnx(_pooling.from_onnx("max_pool"))},
)
