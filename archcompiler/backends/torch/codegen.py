"""Generating PyTorch source from the annotated IR.

The result is one standalone Python module that depends only on torch: a class whose submodules
are named as the spec names its layers, whose ``forward`` runs the graph in schedule order with a
``# N x C x H x W`` comment after every op (the style of torchvision's googlenet.py), plus the
spec's losses, initialisation and ``predict_proba``.  ``archc build`` executes this same source,
so what ``--emit python`` writes is exactly what runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import networkx as nx

from ...errors import BackendError, Location, error
from ...ir import OPS
from ...ir.plan import Plan, plan
from ...spec import Spec
from . import runtime
from .naming import RESERVED_VARIABLES, attr_expr, identifier, module_paths, variable
from .runtime import _log1m_softmax, check_clip, check_input, conv_act, helper_source, spec_loss
from .verify import check_source


def helpers_of(g: nx.DiGraph) -> tuple[list, list[tuple[str, str]]]:
    """The classes and functions the graph's ops' torch code uses (``TorchCode.helper``): archc's own,
    whose text the generated module holds (it stays standalone), and other packages' (a plugin's
    module), which it imports by module path: ``(module, name)``."""
    own, imports = [], []
    for kind in dict.fromkeys(d["op"] for _, d in g.nodes(data=True)):
        helper = OPS[kind].torch.helper
        if helper is None:
            continue
        module, _, name = helper.partition(":")
        if module == runtime.__name__:
            own.append(getattr(runtime, name))
        else:
            imports.append((module, name))
    return list(dict.fromkeys(own)), list(dict.fromkeys(imports))


def shape_comment(shape: tuple[int, ...]) -> str:
    return "# N x " + " x ".join(str(d) for d in shape)


# ----------------------------------------------------------------------------- the class


@dataclass
class Generated:
    source: str
    class_name: str
    module_paths: dict[str, str]       # IR node -> module path (parametrised nodes)


def class_name(spec: Spec) -> str:
    """The generated class's name: ``torch.class_name`` (validated as an identifier), or the spec's
    name in CamelCase; never a name the generated module already uses."""
    if spec.torch.class_name:
        if spec.torch.class_name in runtime.IN_GENERATED:
            raise BackendError([error(f"{spec.torch.class_name!r} is the name of a helper the generated code holds",
                                      "torch.class_name", Location(spec.file),
                                      hint="choose another class name")])
        return spec.torch.class_name
    name = "".join(p[:1].upper() + p[1:] for p in identifier(spec.name).split("_") if p) or "Net"
    taken = name in RESERVED_VARIABLES or name in runtime.IN_GENERATED or name[0].isdigit()
    return name + "Net" if taken else name


def _docstring_text(text: str) -> str:
    """Text that is safe inside the generated module's docstring (a file name may hold anything)."""
    return re.sub(r"[^A-Za-z0-9 _.,:/+=@()\[\]-]", "?", text)[:200]


def generate(g: nx.DiGraph, spec: Spec, heads: bool = True, source_name: str = "", profile: bool = False) -> Generated:
    """PyTorch source for the annotated graph ``g`` (with ``heads=False`` the training-only
    heads are left out entirely; with ``profile=True`` forward() calls ``self.archc_mark(row)``
    after each statement, for ``archc profile``): the submodules registered, forward's statements
    emitted, the file rendered, and the result checked before anything runs it."""
    name = class_name(spec)
    tuple_name = f"{name}Outputs"
    outputs = {k: v for k, v in g.graph["outputs"].items() if heads or not v["training_only"]}
    run = plan(g, heads)          # order, results and in-place ops: shared with the memory pass
    paths, init_lines = register(g, spec, run.order)
    body = emit(g, spec, run, outputs, paths, tuple_name, profile)
    src = render(g, spec, name, tuple_name, outputs, init_lines, body, source_name)
    _, imports = helpers_of(g)
    check_source(src, {name, tuple_name}, {module for module, _ in imports})
    return Generated(src, name, paths)


def register(g: nx.DiGraph, spec: Spec, order: list[str]) -> tuple[dict[str, str], list[str]]:
    """The submodules of the nodes in ``order`` that have parameters, registered in declaration
    order (this fixes the state_dict order): each node's module path, and ``__init__``'s lines."""
    paths: dict[str, str] = {}
    init_lines: list[str] = []
    containers: set[str] = set()
    taken: dict[str, str] = {}
    scheduled = set(order)
    all_paths = module_paths(spec, sorted(g.nodes, key=lambda n: g.nodes[n]["order"]))
    for n in sorted((n for n in g.nodes if n in scheduled), key=lambda n: g.nodes[n]["order"]):
        data = g.nodes[n]
        op = OPS[data["op"]].torch
        if op.module is None:
            continue
        path = all_paths[n]
        if path in taken or any(p == path or p.startswith(path + ".") for p in containers):
            raise BackendError([error(f"two layers map to the module path {path!r} "
                                      f"({taken.get(path, 'a container')} and {n})", n, data["loc"],
                                      hint="check the spec's torch.rename rules")])
        parts = path.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in taken:
                raise BackendError([error(f"module path {path!r} would nest inside layer {taken[prefix]!r}",
                                          n, data["loc"], hint="check the spec's torch.rename rules")])
            if prefix not in containers:
                containers.add(prefix)
                init_lines.append(_assign(prefix, "nn.Module()"))
        ins = [g.nodes[i]["shape"] for i in data["inputs"]]
        init_lines.append(_assign(path, op.module(data["attrs"], ins, data["shape"])))
        paths[n] = path
        taken[path] = n
    return paths, init_lines


def emit(g: nx.DiGraph, spec: Spec, run: Plan, outputs: dict[str, dict], paths: dict[str, str], tuple_name: str,
         profile: bool = False) -> list[str]:
    """forward's statements after the input check: the graph in schedule order (``run``, from
    :func:`~archcompiler.ir.plan.plan`), the training-only heads inside ``if self.training:``,
    tensors deleted after their last use, and the return."""
    heads = {k: f"{variable(k)}_logits" for k, v in outputs.items() if v["training_only"]}
    forward = _Forward(g, spec, run, paths, profile)
    forward.head_of = {run.result_of[k]: holder_var for k, holder_var in heads.items()}
    forward.body.append(f"        # N x {' x '.join(map(str, spec.input))}")     # C x H x W, or a clip's C x T x H x W
    for holder_var in heads.values():          # typed for TorchScript: set in training mode only
        forward.body.append(f"        {holder_var}: Optional[Tensor] = None")
    for i, n in enumerate(run.order):
        forward.statement(i, n)
    forward.close_block()
    return forward.body + _returns(g, spec, outputs, {k: forward.var[v] for k, v in run.result_of.items()},
                                   heads, tuple_name)


class _Forward:
    """forward's statements as they are written: which variable holds each node's value, which nodes'
    values each variable holds, and the variables to delete once nothing reads them again."""

    def __init__(self, g: nx.DiGraph, spec: Spec, run: Plan, paths: dict[str, str], profile: bool) -> None:
        self.g, self.spec, self.run, self.paths, self.profile = g, spec, run, paths, profile
        order, result_nodes = run.order, set(run.result_of.values())
        self.last_use = {n: max(c, default=len(order)) if n not in result_nodes else len(order) + 1
                         for n, c in run.consumers.items()}
        self.last_use["input"] = max(run.consumers["input"], default=0)
        self.var: dict[str, str] = {"input": "x"}
        self.holder: dict[str, str] = {"x": "input"}
        self.bound: dict[str, set[str]] = {"x": {"input"}}     # variable -> the nodes whose value it holds
        self.pending: list[str] = []                           # variables to delete before the next statement
        self.head_of: dict[str, str] = {}                      # a training head's node -> its logits variable
        self.body: list[str] = []
        self.open_training, self.block_start = False, 0

    def dead(self, v: str, i: int) -> bool:
        """Whether variable ``v`` holds nothing that is read after position ``i`` (and was bound by
        code that runs in eval mode too, so deleting it is always valid)."""
        nodes = self.bound.get(v, set())
        return bool(nodes) and all(self.last_use.get(m, 0) <= i and not self.g.nodes[m]["training_only"]
                                   for m in nodes)

    def flush(self, i: int) -> None:
        """Free tensors right after their last use: a block's branch outputs would otherwise stay
        alive in their variables until the next block reuses the names."""
        names = sorted({v for v in self.pending if self.dead(v, i)})
        self.pending.clear()
        if names:
            self.body.append(f"        del {', '.join(names)}")
            for v in names:
                self.bound.pop(v, None)
                self.holder.pop(v, None)

    def close_block(self) -> None:
        """End an ``if self.training:`` block (with ``pass`` when it has no statement)."""
        if self.open_training and len(self.body) == self.block_start:
            self.body.append("            pass")

    def statement(self, i: int, n: str) -> None:
        """Node ``n``'s statement (none for an op whose value passes through), entering or leaving the
        training-only block as ``n`` asks, after deleting what the previous statement left dead."""
        data = self.g.nodes[n]
        training = data["training_only"]
        if training != self.open_training:
            self.close_block()
            if training:
                self.body.append("        if self.training:")
                self.block_start = len(self.body)
            self.open_training = training
        indent = " " * (12 if training else 8)
        if not training:
            self.flush(i - 1)
        xs = [self.var[p] for p in data["inputs"]]
        ins = [self.g.nodes[p]["shape"] for p in data["inputs"]]
        if OPS[data["op"]].passthrough(data["attrs"], ins):
            self.var[n] = xs[0]          # nothing to compute: the value passes through
            self.bound[xs[0]].add(n)
        else:
            out = _choose_var(n, self.g, self.spec, i, self.var, self.holder, self.last_use, self.run.result_of)
            module = attr_expr("self", self.paths[n]) if n in self.paths else ""
            expr = OPS[data["op"]].torch.call_on(data["attrs"], xs, module, n in self.run.inplace, ins)
            self.body.append(f"{indent}{out} = {expr}  {shape_comment(data['shape'])}")
            if self.profile and not training:
                self.body.append(f"{indent}self.archc_mark({n!r})")
            self.var[n] = out
            self.holder[out] = n
            self.bound[out] = {n}
        self.pending.extend(v for v in xs if v != self.var[n])
        if n in self.head_of:
            self.body.append(f"{indent}{self.head_of[n]} = {self.var[n]}")


def _returns(g: nx.DiGraph, spec: Spec, outputs: dict[str, dict], value: dict[str, str], heads: dict[str, str],
             tuple_name: str) -> list[str]:
    """forward's return statements (``value``: each output's variable; ``heads``: the training heads'
    logits variables): a dict of feature maps, a dict of outputs (``torch.returns: dict``), the named
    tuple in training with heads (only the main output in eval mode), the tuple, or the one tensor."""
    main_names = [k for k, v in outputs.items() if not v["training_only"]]
    ret_main = value[main_names[0]]
    fields = ", ".join(f"{k}={heads.get(k) or value[k]}" for k in outputs)
    if g.graph.get("features"):         # a feature extractor: {name: map}, as IntermediateLayerGetter
        return ["        return {" + ", ".join(f"{k!r}: {value[k]}" for k in outputs) + "}"]
    if spec.torch.returns == "dict":    # {name: tensor}, as torchvision's segmentation models
        every = "{" + ", ".join(f"{k!r}: {heads.get(k) or value[k]}" for k in outputs) + "}"
        inference = "{" + ", ".join(f"{k!r}: {value[k]}" for k in main_names) + "}"
        if heads:
            return ["        if self.training:", f"            return {every}", f"        return {inference}"]
        return [f"        return {every}"]
    if heads:
        return ["        if torch.jit.is_scripting():   # TorchScript needs one return type, as torchvision's",
                f"            return {tuple_name}({fields})",
                "        else:",
                "            if self.training:",
                f"                return {tuple_name}({fields})",
                f"            return {ret_main}"]
    if len(outputs) > 1:
        return [f"        return {tuple_name}({fields})"]
    return [f"        return {ret_main}"]


def render(g: nx.DiGraph, spec: Spec, name: str, tuple_name: str, outputs: dict[str, dict], init_lines: list[str],
           body: list[str], source_name: str = "") -> str:
    """The module's text: the named tuple of outputs, the helpers (their text from runtime.py), and
    the class with ``__init__``'s lines, forward's ``body``, the losses, initialisation and
    ``predict_proba``."""
    # a final softmax: predict_proba applies it to the logits forward() returns
    final_softmax = {k: OPS[g.nodes[v["node"]]["op"]].probabilities for k, v in outputs.items()}
    main_names = [k for k, v in outputs.items() if not v["training_only"]]
    features = bool(g.graph.get("features"))      # a dict of maps: no named tuple, no loss, no classes
    field_types = "    pass" if features else "\n".join(
        f"    {k}: {'Optional[Tensor]' if v['training_only'] else 'Tensor'}" for k, v in outputs.items())
    losses = {} if features else {k: (v["loss"], v["weight"], final_softmax[k]) for k, v in outputs.items()}
    init_rules = {kind: rule.model_dump() for kind, rule in spec.init.items()}
    # a convolution whose activation fuse_activation fused into it calls conv_act
    fused = any(d["attrs"].get("act") for _, d in g.nodes(data=True))
    own, imports = helpers_of(g)
    return _TEMPLATE.format(
        source=_docstring_text(source_name or spec.file), spec=_docstring_text(spec.name), name=name, tuple_name=tuple_name,
        fields=list(outputs), field_types=field_types, init="\n".join(init_lines) or "        pass",
        body="\n".join(body), losses=losses, init_rules=init_rules, main=main_names[0],
        num_outputs=len(outputs), input_shape=list(spec.input),
        proba=_final_call(g, outputs[main_names[0]]["node"]) if final_softmax[main_names[0]]
        else _proba_of_loss(outputs[main_names[0]]["loss"] or "cross_entropy"), no_classes=_NO_CLASSES if features else "",
        # the helpers' text from runtime.py (one blank line after the named tuple, then two between definitions)
        loss_helpers=helper_source(_log1m_softmax, spec_loss)[1:],
        check_input=helper_source(check_input if len(spec.input) == 3 else check_clip),    # an image's, a clip's
        check_name="check_input" if len(spec.input) == 3 else "check_clip",
        spec_repr=repr(spec.name),
        conv_act=(helper_source(conv_act) if fused else "") + helper_source(*own),
        imports="".join(f"from {module} import {name}\n" for module, name in imports),
        layout="\n        x = x.contiguous(memory_format=torch.channels_last)  # the layout the weights have"
        if g.graph.get("memory_format") == "channels_last" else "",
        inference_only=_INFERENCE_ONLY if g.graph.get("optimizations") is not None else "",
    )


_NO_CLASSES = '''
        raise RuntimeError("this module is a feature extractor (the spec's features:): it gives maps, "
                           "not class probabilities")'''


def _proba_of_loss(loss: str) -> str:
    """Without a final softmax, the probabilities the main output's loss trains the logits to give: a
    softmax over the classes for cross-entropy, each unit's sigmoid for binary cross-entropy."""
    return "torch.softmax(logits, dim=1)" if loss == "cross_entropy" else "torch.sigmoid(logits)"


def _final_call(g: nx.DiGraph, node: str) -> str:
    """The call of a final op that forward() leaves out (a softmax: the logits are returned), applied
    to ``logits`` in predict_proba."""
    d = g.nodes[node]
    return OPS[d["op"]].torch.call(d["attrs"], ["logits"], "", False)


def _assign(path: str, value: str) -> str:
    parent, _, leaf = path.rpartition(".")
    base = attr_expr("self", parent) if parent else "self"
    if leaf.isidentifier():
        return f"        {base}.{leaf} = {value}"
    return f'        {base}.add_module("{leaf}", {value})'


def _choose_var(n: str, g: nx.DiGraph, spec: Spec, i: int, var: dict, holder: dict,
                last_use: dict, result_of: dict) -> str:
    """``x`` for the main stream, the layer's own name inside blocks and heads; another name only
    when the preferred one still holds a tensor that is needed later."""
    data = g.nodes[n]
    layer = data["layer"]
    outputs_of = {v: k for k, v in result_of.items()}
    instance = spec.instances.get(data["group"]) if data["group"] else None
    if data["training_only"] and n in outputs_of:
        preferred = variable(outputs_of[n])
    elif data["training_only"]:
        preferred = variable(data["row"])
    elif data["group"] is None or (instance is not None and instance.output == layer and instance.parent is None):
        preferred = "x"
    else:
        preferred = variable(layer.rsplit("/", 1)[-1])
    heads = {f"{variable(k)}_logits" for k, v in g.graph["outputs"].items() if v["training_only"]}
    for candidate in (preferred, variable(layer), variable(n)):
        current = holder.get(candidate)
        if candidate in heads:
            continue
        if current is None or current in data["inputs"] and last_use.get(current, 0) <= i \
                or last_use.get(current, 0) < i:
            return candidate
    k = 2
    while holder.get(f"{variable(n)}_{k}") is not None:
        k += 1
    return f"{variable(n)}_{k}"


_INFERENCE_ONLY = '''

    def train(self, mode: bool = True):
        """This module is optimised for inference (BatchNorm folded, dropout and auxiliary heads
        removed): it cannot train. Build it without --optimize to train."""
        if mode:
            raise RuntimeError("this module is optimised for inference and cannot train; "
                               "build it without optimize=True (--optimize) to train")
        return super().train(False)
'''

_TEMPLATE = '''"""{spec}: PyTorch module generated by archc from {source}.

Do not edit: change the spec and run `archc build` again.
"""

from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
{imports}


class {tuple_name}(NamedTuple):
    """The model's outputs in training mode, the main one first."""

{field_types}
{loss_helpers}{check_input}{conv_act}

class {name}(nn.Module):
    """Outputs: {fields!r}; the training-only ones exist in training mode only."""

    LOSSES = {losses!r}   # output -> (loss, weight, whether its final op gives probabilities)
    INIT = {init_rules!r}
    INPUT_SHAPE = {input_shape!r}

    def __init__(self) -> None:
        super().__init__()
{init}
        self.init_weights()

    def forward(self, x: Tensor):
        if not torch.jit.is_scripting():
            if not torch.jit.is_tracing():
                {check_name}(x, self.INPUT_SHAPE, {spec_repr}){layout}
{body}
{inference_only}
    def loss(self, outputs, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """The spec's losses: each output's loss times its weight, summed."""
        if isinstance(outputs, Tensor):
            outputs = {{{main!r}: outputs}}
        elif not isinstance(outputs, dict):
            outputs = outputs._asdict()
        total = None
        for name, logits in outputs.items():
            kind, weight, probabilities = self.LOSSES[name]
            term = weight * spec_loss(kind, probabilities, logits, target, label_smoothing)
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities: the spec's final softmax applied to the main output, in eval mode."""{no_classes}
        was_training = self.training
        self.eval()
        try:
            logits = self(x)
        finally:
            self.train(was_training)
        if isinstance(logits, dict):
            logits = logits[{main!r}]
        elif isinstance(logits, tuple):
            logits = logits[0]
        return {proba}

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise weights as the spec's `init` section says (PyTorch's defaults otherwise)."""
        kinds = {{nn.Conv2d: "conv", nn.Linear: "linear", nn.BatchNorm2d: "batch_norm"}}
        for module in self.modules():
            rule = self.INIT.get(kinds.get(type(module), ""))
            if rule is None or rule["kind"] == "default":
                continue
            w = module.weight
            if rule["kind"] == "trunc_normal":
                nn.init.trunc_normal_(w, mean=rule["mean"], std=rule["std"], a=rule["a"], b=rule["b"])
            elif rule["kind"] == "normal":
                nn.init.normal_(w, mean=rule["mean"], std=rule["std"])
            elif rule["kind"] == "xavier_uniform":
                nn.init.xavier_uniform_(w)
            elif rule["kind"] == "xavier_normal":
                nn.init.xavier_normal_(w)
            elif rule["kind"] == "kaiming_normal":
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
            elif rule["kind"] == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu")
            elif rule["kind"] == "constant":
                nn.init.constant_(w, rule["value"])
            if module.bias is not None and rule["bias"] is not None:
                nn.init.constant_(module.bias, rule["bias"])
'''
