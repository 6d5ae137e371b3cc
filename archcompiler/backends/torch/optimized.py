"""The optimised inference module (``archc build --optimize``, ``build(spec, optimize=True)``).

Weights first, then folding: an ordinary module is built (and loaded with any checkpoint, in the
usual layout), and the optimised module generated from the optimised graph takes its weights from
it: BatchNorm folded into the convolutions before it, the rest copied, all in channels-last layout.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from ...passes.optimize import fold_weights, optimize
from .codegen import generate
from .info import ArchcInfo, archc_info
from .loader import compile_source
from .weights import state_at


def _weights(base: torch.nn.Module, source: dict[str, str], node: str, attrs: dict) -> tuple:
    """A convolution's weight and bias in the optimised module (BatchNorm folded in where it was)."""
    module = base.get_submodule(source[node])
    folded = attrs.get("folded_bn")
    if not folded:
        return module.weight, module.bias
    bn = base.get_submodule(source[folded["node"]])
    return fold_weights(module.weight, module.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                        folded["eps"])


def optimize_module(base: torch.nn.Module, g: Any, spec: Any, passes: Any = None,
                    profile: bool = False) -> torch.nn.Module:
    """The optimised twin of ``base`` (built from ``spec``, whose annotated graph is ``g``)."""
    og = optimize(g, passes)
    gen = generate(og, spec, heads=False, profile=profile)
    cls = compile_source(gen, f"<archc:{spec.name}:optimized>")
    with torch.random.fork_rng():
        model = cls()
    base_info = archc_info(base)
    source = base_info.module_paths
    state = {}
    with torch.no_grad():
        for node, path in gen.module_paths.items():
            attrs = og.nodes[node]["attrs"]
            if attrs.get("siblings"):           # fused siblings: their weights side by side
                parts = [_weights(base, source, s["node"], s["attrs"]) for s in attrs["siblings"]]
                state[f"{path}.weight"] = torch.cat([w for w, _ in parts])
                if attrs["bias"]:
                    state[f"{path}.bias"] = torch.cat([b for _, b in parts])
            elif attrs.get("folded_bn"):
                state[f"{path}.weight"], state[f"{path}.bias"] = _weights(base, source, node, attrs)
            else:
                for key, value in state_at(base, source[node]).items():
                    state[path + key[len(source[node]):]] = value
    model.load_state_dict(state, strict=True)
    model.eval()
    if og.graph.get("memory_format") == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    model.code = gen.source
    model.archc = ArchcInfo(spec=base_info.spec, module_paths=gen.module_paths, heads=False,
                            optimizations=tuple(og.graph.get("optimizations", [])))
    return model


def compile_module(model: torch.nn.Module, example: torch.Tensor | None = None) -> torch.nn.Module:
    """``torch.compile`` where a compiler is available; otherwise the module as it is, with a
    one-line message saying why (the compile happens at the first call, so it is tried on
    ``example`` when one is given)."""
    try:
        compiled = torch.compile(model)
        if example is not None:
            with torch.no_grad():
                compiled(example)
    except Exception as exc:  # a missing C compiler, an unsupported platform, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"archc: torch.compile is not available here ({reason[:160]}); using the module uncompiled",
              file=sys.stderr)
        return model
    for name in ("code", "archc"):
        if hasattr(model, name):
            setattr(compiled, name, getattr(model, name))
    return compiled
