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


def optimize_module(base: torch.nn.Module, g: Any, spec: Any) -> torch.nn.Module:
    """The optimised twin of ``base`` (built from ``spec``, whose annotated graph is ``g``)."""
    from .build import compile_source

    og = optimize(g)
    gen = generate(og, spec, heads=False)
    cls = compile_source(gen, f"<archc:{spec.name}:optimized>")
    with torch.random.fork_rng():
        model = cls()
    source = base.archc_module_paths
    state = {}
    with torch.no_grad():
        for node, path in gen.module_paths.items():
            module = base.get_submodule(source[node])
            attrs = og.nodes[node]["attrs"]
            folded = attrs.get("folded_bn")
            if folded:
                bn = base.get_submodule(source[folded["node"]])
                weight, bias = fold_weights(module.weight, module.bias, bn.weight, bn.bias, bn.running_mean,
                                            bn.running_var, folded["eps"])
                state[f"{path}.weight"], state[f"{path}.bias"] = weight, bias
            else:
                for key, value in module.state_dict().items():
                    state[f"{path}.{key}"] = value
    model.load_state_dict(state, strict=True)
    model.eval()
    if og.graph.get("memory_format") == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    model.code = gen.source
    model.archc_spec = base.archc_spec
    model.archc_module_paths = gen.module_paths
    model.archc_heads = False
    model.archc_optimizations = og.graph.get("optimizations", [])
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
    for name in ("code", "archc_spec", "archc_module_paths", "archc_heads", "archc_optimizations"):
        if hasattr(model, name):
            setattr(compiled, name, getattr(model, name))
    return compiled
