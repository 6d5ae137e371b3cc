"""Average pooling (``op: avg_pool``)."""

from __future__ import annotations

import math
from typing import Literal

from ..spec.layers import Bool
from . import _pooling
from ._base import FromOnnx, FromTorch, LayerOp, Op, OpDef, Style, TorchCode, kxs, per_map, window_elements

KIND = "avg_pool2d"


class AvgPool(_pooling.Pool):
    """Average pooling over windows of the map (nn.AvgPool2d)."""

    op: Literal["avg_pool"]
    count_include_pad: Bool = True


OP = Op(
    layers=(LayerOp(AvgPool, _pooling.lower(KIND)),),
    kinds=(OpDef(
        KIND, _pooling.shape, attrs=("kernel", "stride", "padding", "ceil_mode", "count_include_pad"),
        window=_pooling.window, depth="pooling", patch=kxs, elementwise=window_elements,
        # TensorFlow's 'same' where PyTorch cannot pad: the padded copy (the count of the map's pixels in each
        # window it is divided by is one small map for the whole batch: measured, it never sets the peak)
        workspace=lambda a, i, o: _pooling.padded_elements(a, i),
        saves=lambda a, i, o: ((), _pooling.padded_elements(a, i) + math.prod(o))
        if _pooling.padded_before(a, i) else (("input",), 0), latency=per_map(("avg_pool",), lambda a: "avg_pool", window_elements),
        torch=TorchCode(None, _pooling.call("avg_pool2d"), shaped_call=_pooling.call("avg_pool2d")), style=Style("box", "#fde0c5")),),
    from_torch={"AvgPool2d": FromTorch(KIND, _pooling.from_torch("avg_pool")),
                "fn:avg_pool2d": FromTorch(KIND, _pooling.from_torch("avg_pool"),
                                           ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                            "divisor_override"))},
    from_onnx={"AveragePool": FromOnnx(_pooling.from_onnx("avg_pool", True))},
)
