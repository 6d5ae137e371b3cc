"""Every fact about an op is in its module (archcompiler/ops/NAME.py), found through the registry:
each IR kind has its torch code, its drawing style and a latency class calibrate measures; no code
outside the op modules compares an op kind with a name, and an op's name occurs in its own module
alone. Then the two activations added by the README's recipe (hardswish, hardsigmoid) against
torch, and the hint for inputs of an add that differ."""

from __future__ import annotations

import ast

import pytest
from conftest import ALL_SPECS, ROOT, assert_memory_measured

import archcompiler
from archcompiler import GraphError
from archcompiler.ir import MEMORY, OPS, STATEMENT
from archcompiler.ops import registry
from archcompiler.ops.activation import ACTIVATIONS, Act, ActivationKind
from archcompiler.passes import machine

PACKAGE = ROOT / "archcompiler"

# ----------------------------------------------------------------------------- every kind is covered


def test_every_op_kind_has_torch_code_a_drawing_style_and_a_lowering_that_reaches_it():
    reg = registry()
    assert not reg.problems
    for kind, op in reg.kinds.items():
        assert op.torch.call is not None and op.style.shape, kind
    assert {e.kind for e in reg.from_torch.values()} <= set(reg.kinds)


def test_every_activation_of_the_spec_language_has_its_facts_and_a_torch_call():
    assert set(ACTIVATIONS) == set(ActivationKind.__args__) == set(Act.model_fields["op"].annotation.__args__)
    assert all(a.saves in ("input", "output") and "{x}" in a.torch for a in ACTIVATIONS.values())


def test_every_op_has_a_latency_class_the_machine_profile_knows():
    for kind, op in OPS.items():
        assert op.latency.classes, kind
        assert set(op.latency.classes) <= {*machine.KERNELS, STATEMENT, MEMORY}, kind


def test_calibrate_measures_exactly_the_kernel_classes_of_the_machine_profile():
    """The grid itself (with a timer that runs nothing): its keys are the profile's kernel keys,
    in both layouts; and the profile's version is one number."""
    torch = pytest.importorskip("torch")
    from archcompiler.measure import calibrate, grid

    kernels, fixed = grid.measure_grid(torch.device("cpu"), lambda fn, operations, label: 1.0, True,
                                       lambda text: None)
    expected = {machine.kernel_key(k, layout) for k in machine.KERNELS for layout in machine.LAYOUTS}
    assert set(kernels) == set(fixed) == expected
    assert calibrate.VERSION is machine.VERSION


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.stem)
def test_each_node_runs_as_one_of_the_latency_classes_its_op_declares(path):
    from archcompiler.passes import annotated_graph
    from archcompiler.passes.optimize import ALL, optimize

    g = annotated_graph(archcompiler.load_spec(path))
    for graph in (g, optimize(g, list(ALL))):
        for n, d in graph.nodes(data=True):
            ins = [graph.nodes[p]["shape"] for p in d["inputs"]]
            kernel = OPS[d["op"]].latency.kernel(d["attrs"], ins, d["shape"])
            assert kernel.kind in OPS[d["op"]].latency.classes, (n, kernel)


# ----------------------------------------------------------------------------- no op names outside the op modules
# An "op-kind expression" is what holds an op kind (an IR op or an activation kind): ``X["op"]``,
# ``X.get("op")``, ``X["spec_op"]``, ``X["attrs"]["kind"]`` / ``attrs["kind"]``, ``X.kind`` (a registry
# entry's or an imported layer's IR kind), a name bound to one of these in the same function, and a
# parameter or variable named ``op``, ``op_kind`` or ``final``. Outside its own op module it may not be
#   - compared (==, !=, in, not in) with a string literal, a tuple/list/set of string literals, a
#     module-level name bound to such a collection (a parallel set such as VIEWS = {...}), or an
#     expression that looks something up by a string literal (``FROM_TORCH["fn:cat"].kind``);
#   - looked up (``T[op]``, ``T.get(op)``) in a dict literal, or in a module-level name bound to
#     one, other than an op module's own tables.
# The scan runs on every module of the package, the op modules included (archcompiler/ops/).
OP_MODULES = "archcompiler/ops/"
KIND_NAMES = {"op", "op_kind", "final"}


def _str_collection(node: ast.AST) -> bool:
    """A string literal, or a literal collection (or frozenset/set/tuple call) holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_str_collection(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return any(k is not None and _str_collection(k) for k in node.keys)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("frozenset", "set", "tuple"):
        return any(_str_collection(a) for a in node.args)
    return False


def _key(node: ast.AST) -> str | None:
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def _is_kind(node: ast.AST, bound: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in bound or node.id in KIND_NAMES
    if isinstance(node, ast.Attribute) and node.attr == "kind":       # (a model's own field aside: self.kind;
        base = node.value                                               # and numpy's x.dtype.kind)
        return not (isinstance(base, ast.Name) and base.id == "self" or isinstance(base, ast.Attribute) and base.attr == "dtype"
                    or isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and base.func.attr == "dtype")
    key = _key(node)
    if key in ("op", "spec_op"):
        return True
    if key == "kind":
        base = node.value
        return _key(base) == "attrs" or (isinstance(base, ast.Name) and base.id == "attrs")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        first = node.args[0]
        return isinstance(first, ast.Constant) and first.value in ("op", "spec_op")
    return False


def _names(target: ast.AST) -> list[ast.AST]:
    return list(target.elts) if isinstance(target, (ast.Tuple, ast.List)) else [target]


def _bound_kinds(fn: ast.AST) -> set[str]:
    """Names a function binds to op-kind expressions (``op = d["op"]``, ``op, a = d["op"], d["attrs"]``)."""
    bound: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                values = _names(node.value) if isinstance(target, (ast.Tuple, ast.List)) else [node.value]
                for t, v in zip(_names(target), values):
                    if isinstance(t, ast.Name) and _is_kind(v, bound):
                        bound.add(t.id)
    return bound


def op_name_uses(source: str, module: str) -> list[str]:
    """Where ``source`` (the file ``module``, relative to the repository) compares an op kind with a
    name or looks it up in a table of its own: ``module:line: code``."""
    tree = ast.parse(source)
    collections = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                   for t in node.targets if isinstance(t, ast.Name) and _str_collection(node.value)}
    dicts = {name for name, value in collections.items() if isinstance(value, ast.Dict)}
    found = []

    def names_kinds(node: ast.AST) -> bool:
        looked_up = any(isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and
                        isinstance(n.slice.value, str) for n in ast.walk(node))
        return _str_collection(node) or looked_up or (isinstance(node, ast.Name) and node.id in collections)

    def visit(scope: ast.AST, bound: set[str]) -> None:
        for node in ast.iter_child_nodes(scope):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = bound | _bound_kinds(node)
                if not isinstance(node, ast.Lambda):
                    inner |= {a.arg for a in node.args.args if a.arg in KIND_NAMES}
                visit(node, inner)
                continue
            bad = False
            if isinstance(node, ast.Compare) and \
                    all(isinstance(o, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for o in node.ops):
                sides = [node.left, *node.comparators]
                bad = any(_is_kind(s, bound) for s in sides) and any(
                    names_kinds(s) for s in sides if not _is_kind(s, bound) or isinstance(s, ast.Attribute))
            table = None
            if isinstance(node, ast.Subscript) and _is_kind(node.slice, bound):
                table = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and node.args and _is_kind(node.args[0], bound):
                table = node.func.value
            if table is not None:
                if isinstance(table, ast.Dict):
                    bad = True
                elif isinstance(table, ast.Name) and table.id in dicts and not module.startswith(OP_MODULES):
                    bad = True
            if bad:
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)[:100]}")
            visit(node, bound)

    visit(tree, _bound_kinds(ast.Module(body=[n for n in tree.body if not isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))], type_ignores=[])))
    return found


def test_no_code_compares_an_op_kind_with_a_name():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += op_name_uses(path.read_text(), path.relative_to(ROOT).as_posix())
    assert not found, "an op's facts belong in its module (archcompiler/ops/NAME.py):\n" + "\n".join(found)


@pytest.mark.parametrize("code", [
    'def f(d):\n    return d["op"] == "softmax"\n',
    'def f(g, n):\n    return g.nodes[n]["op"] != "dropout"\n',
    'def f(op, ins):\n    return op in ("concat", "add")\n',
    'VIEWS = {"flatten", "dropout"}\ndef f(d):\n    return d["op"] in VIEWS\n',
    'def f(d):\n    kind, attrs = d["op"], d["attrs"]\n    return kind == "conv2d"\n',
    'def f(g):\n    for n, d in g.nodes(data=True):\n        op = d["op"]\n        if op == "lrn":\n            return n\n',
    'def f(d):\n    return d["attrs"]["kind"] in frozenset({"relu", "silu"})\n',
    'def f(d):\n    return {"activation": 1, "lrn": 2}.get(d["op"], 0)\n',
    'KERNEL = {"relu": 1}\ndef f(d):\n    return KERNEL[d.get("op")]\n',
    'def f(d):\n    return d["spec_op"] == "conv"\n',
    # the seven comparisons the scan missed before (#36): a registry entry's kind against one looked up by a
    # literal key, and a final op's name
    'def f(entry):\n    return entry.kind == FROM_TORCH["fn:cat"].kind\n',
    'def f(made):\n    return made is not None and made.kind == FROM_TORCH["Flatten"].kind\n',
    'def f(conv):\n    return conv.kind == FROM_TORCH["Conv2d"].kind and conv.x\n',
    'def f(kind, final):\n    if final == "softmax":\n        return 1\n',
])
def test_the_scan_finds_op_names(code):
    assert op_name_uses(code, "archcompiler/passes/x.py")


@pytest.mark.parametrize("code", [
    'def f(d):\n    return OPS[d["op"]].alias == "eval"\n',
    'def f(d):\n    return d["role"] == "bn" or d["layer"] == "input"\n',
    'def f(d):\n    return TORCH_OPS[d["op"]]\n',
    'def f(d):\n    return d["op"] == other["op"]\n',
    'def f(entry):\n    return OPS[entry.kind].join == "stack"\n',
])
def test_the_scan_leaves_the_registry_lookups_alone(code):
    assert not op_name_uses(code, "archcompiler/backends/torch/codegen.py")


def test_an_op_module_may_look_up_its_own_tables_but_not_compare_kinds_with_names():
    own = 'ACTS = {"relu": 1}\ndef f(attrs):\n    return ACTS[attrs["kind"]]\n'
    assert not op_name_uses(own, "archcompiler/ops/activation.py")
    assert op_name_uses(own, "archcompiler/passes/x.py")
    assert op_name_uses('def f(op):\n    return op == "activation"\n', "archcompiler/ops/activation.py")


# the ops whose names the issue (#36) checks: each occurs as a string in its own module and nowhere else in
# the package (specs, docs and tests aside)
ONE_MODULE = ["group_norm", "channel_shuffle", "layer_scale"]


@pytest.mark.parametrize("op", ONE_MODULE)
def test_an_ops_name_occurs_in_its_own_module_alone(op):
    import re

    word = re.compile(rf"\b{op}\b")
    holders = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and word.search(node.value):
                holders.add(path.relative_to(ROOT).as_posix())
    assert holders == {f"archcompiler/ops/{op}.py"}, holders


# ----------------------------------------------------------------------------- activations: hardswish and hardsigmoid


def _act_spec(act: str) -> str:
    return ("name: t\ninput: [3, 12, 12]\nlayers:\n"
            f"  - {{name: c1, op: conv, out: 8, kernel: 3, padding: 1, norm: batch_norm, act: {act}}}\n"
            f"  - {{name: c2, op: conv, out: 8, kernel: 1}}\n"
            f"  - {{name: a2, op: {act}}}\n"
            "  - {name: p, op: global_avg_pool}\n"
            f"  - {{name: fc, op: linear, out: 6, act: {act}}}\n"
            "  - {name: out, op: linear, out: 2}\n")


@pytest.mark.parametrize("act", ["hardswish", "hardsigmoid"])
def test_hard_activations_agree_with_torch(act):
    """Shapes, parameters and FLOPs as torch counts them, and the logits of torchvision's modules
    (MobileNetV3: nn.Hardswish(inplace=True), nn.Hardsigmoid()) under the same weights."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    text = _act_spec(act)
    report = archcompiler.analyze(text)
    model = archcompiler.build(text, seed=0).eval()
    module = {"hardswish": lambda: nn.Hardswish(inplace=True), "hardsigmoid": nn.Hardsigmoid}[act]
    reference = nn.Sequential(model.c1.conv, model.c1.bn, module(), model.c2, module(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc, module(), model.out).eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = model(x.clone())
    assert tuple(y.shape[1:]) == tuple(report["rows"][-1]["output"])
    assert sum(p.numel() for p in model.parameters()) == report["total"]["params"]
    assert counter.get_total_flops() == 2 * 2 * report["total"]["macs"]
    with torch.no_grad():
        assert torch.equal(y, reference(x.clone()))
    assert report["by_op"]["activation"]["elementwise"] == 8 * 12 * 12 * 2 + 6


def test_hardswish_runs_in_place_as_torchvision_and_hardsigmoid_does_not():
    from archcompiler.backends.torch.codegen import generate
    from archcompiler.passes import annotated_graph

    def forward(act: str) -> str:
        spec = archcompiler.load_spec(_act_spec(act))
        return generate(annotated_graph(spec), spec).source.split("def forward")[1].split("return")[0]
    assert "F.hardswish(x, inplace=True)" in forward("hardswish")
    assert "F.hardsigmoid(x)" in forward("hardsigmoid") and "inplace" not in forward("hardsigmoid")


@pytest.mark.parametrize("act", ["hardswish", "hardsigmoid", "silu", "gelu", "relu6", "relu"])
def test_activation_memory_matches_a_measurement(act):
    """Inference peak exactly; a training step within 1% (an in-place activation whose backward needs
    its input makes autograd keep a copy of that input: hardswish_, silu_)."""
    torch = pytest.importorskip("torch")
    from archcompiler.measure.memory import measure_peak_activation_bytes, measure_training_peak_bytes

    text = _act_spec(act)
    torch.manual_seed(0)
    model = archcompiler.build(text, seed=0)
    assert archcompiler.analyze(text, batch=4)["peak_activation_bytes"] == \
        measure_peak_activation_bytes(model, torch.randn(4, 3, 12, 12))
    predicted = archcompiler.analyze(text, batch=8, train_memory="sgd")["train_memory"]["peak"]
    measured = measure_training_peak_bytes(archcompiler.build(text, seed=0), torch.randn(8, 3, 12, 12),
                                           torch.randint(0, 2, (8,)), "sgd")
    assert abs(predicted - measured) <= 0.01 * measured, (predicted, measured)


@pytest.mark.parametrize("act", ["hardswish", "hardsigmoid"])
def test_hard_activations_are_drawn_and_timed(act):
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    dot = build_dot(archcompiler.load_spec(_act_spec(act))).source
    assert f"conv 3x3/1 8 + BN + {act}" in dot and f"a2\\n{act}" in dot
    kernel = OPS["activation"].latency.kernel({"kind": act}, [(8, 12, 12)], (8, 12, 12))
    assert kernel.kind == "relu" and kernel.work == 8 * 12 * 12


# ----------------------------------------------------------------------------- mul (squeeze-and-excitation)

_SE = ("name: t\ninput: [8, 10, 10]\nlayers:\n"
       "  - {name: c, op: conv, out: 16, kernel: 3, padding: 1, norm: batch_norm, act: relu}\n"
       "  - {name: pool, op: global_avg_pool}\n"
       "  - {name: fc1, op: conv, out: 4, kernel: 1, act: relu}\n"
       "  - {name: fc2, op: conv, out: 16, kernel: 1, act: hardsigmoid}\n"
       "  - {name: scale, op: mul, inputs: [fc2, c]}\n"
       "  - {name: p, op: global_avg_pool}\n"
       "  - {name: fc, op: linear, out: 2}\n")


def test_mul_gates_a_map_as_torchvisions_squeeze_excitation():
    """torchvision.ops.SqueezeExcitation: scale = hardsigmoid(fc2(relu(fc1(avgpool(x))))); scale * x."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    model = archcompiler.build(_SE, seed=0).eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        c = model.c.bn(model.c.conv(x)).relu()
        scale = F.hardsigmoid(model.fc2(F.relu(model.fc1(F.adaptive_avg_pool2d(c, 1)))))
        assert torch.equal(model(x), model.fc(torch.flatten(F.adaptive_avg_pool2d(scale * c, 1), 1)))
    report = archcompiler.analyze(_SE)
    assert report["by_op"]["mul"]["elementwise"] == 16 * 10 * 10


def test_mul_refuses_shapes_that_do_not_broadcast_naming_both():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(_SE.replace("out: 16, kernel: 1", "out: 8, kernel: 1"))
    (problem,) = info.value.errors
    assert "mul needs inputs that broadcast" in problem.message and "1x1x8 and 10x10x16" in problem.message
    assert problem.line == 8      # the mul


def test_mul_memory_matches_a_measurement():
    """Inference peak exactly; a training step within 1% (autograd keeps both inputs, and the gate's
    gradient is computed at the map's size before it is summed down)."""
    pytest.importorskip("torch")
    for text in (_SE, _SE.replace("inputs: [fc2, c]", "inputs: [c, fc2]")):
        assert_memory_measured(text)


def test_mul_is_drawn_and_timed_like_an_add():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    assert "scale\\nmul" in build_dot(archcompiler.load_spec(_SE)).source
    kernel = OPS["mul"].latency.kernel({}, [(16, 1, 1), (16, 10, 10)], (16, 10, 10))
    assert kernel.kind == "add" and kernel.work == 16 * 10 * 10


# ----------------------------------------------------------------------------- issue #20 item 5


def test_inputs_of_an_add_that_differ_in_channels_point_at_the_out_that_sets_them():
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(ROOT / "specs" / "resnet18.yaml", overrides=["conv1.out=32"])
    (problem,) = [e for e in info.value.errors if "layer1_0/add" in e.message]
    assert "32 against 64" in problem.hint and "check the out of conv1" in problem.hint
    assert "kernel" not in problem.hint and "stride" not in problem.hint


def test_inputs_that_differ_in_size_point_at_the_windows():
    text = ("name: t\ninput: [3, 8, 8]\nlayers:\n"
            "  - {name: a, op: conv, out: 4, kernel: 3, padding: 1, input: input}\n"
            "  - {name: b, op: conv, out: 4, kernel: 3, padding: 1, input: input}\n"
            "  - {name: c, op: conv, out: 4, kernel: 3, stride: 2, input: input}\n"
            "  - {name: x, op: add, inputs: [a, b, c]}\n"
            "  - {name: y, op: concat, inputs: [a, c]}\n"
            "  - {name: z, op: add, inputs: [x, y]}\n")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    hints = {e.message.split(" gives")[0]: e.hint for e in info.value.errors}
    assert "check the kernel, stride and padding of c" in hints["c"]
    assert "concat needs inputs of one height and width" in [e.hint for e in info.value.errors
                                                             if "concat" in e.message][0]
    # x is 8x8x4, y 8x8x8: channels only -> the layer that sets them (the concat itself)
    assert "the channels differ (8 against 4)" in hints["y"] and "check the out of y" in hints["y"]


def test_the_readme_recipe_names_files_and_folders_that_exist():
    import re

    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("### Adding an op")[1].split("\n## ")[0]
    files = [f for f in re.findall(r"`([\w/.]+(?:\.(?:py|json|md)|/))`", recipe) if "NAME" not in f]
    assert len(files) >= 8 and all((ROOT / f).exists() for f in files), files


# ----------------------------------------------------------------------------- channel split and shuffle (ShuffleNetV2)

_UNIT = ("name: t\ninput: [8, 10, 10]\nlayers:\n"
         "  - {name: c, op: conv, out: 16, kernel: 3, padding: 1, norm: batch_norm, act: relu}\n"
         "  - {name: left, op: channel_split, half: first}\n"
         "  - {name: right, op: channel_split, half: second, input: c}\n"
         "  - {name: pw, op: conv, out: 8, kernel: 1, norm: batch_norm, act: relu}\n"
         "  - {name: cat, op: concat, inputs: [left, pw]}\n"
         "  - {name: shuffle, op: channel_shuffle, groups: 2}\n"
         "  - {name: p, op: global_avg_pool}\n"
         "  - {name: fc, op: linear, out: 2}\n")


@pytest.mark.parametrize("change, message, line", [
    (("out: 16", "out: 15"), "channel_split halves the channels and needs an even number of them, got 10x10x15", 5),
    (("groups: 2", "groups: 3"), "channel_shuffle: groups=3 must divide the input's channels, got 10x10x16", 9),
])
def test_split_and_shuffle_refuse_channels_they_cannot_divide_at_their_line(change, message, line):
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(_UNIT.replace(*change))
    problem = info.value.errors[0]
    assert message in problem.message and problem.line == line


def test_split_is_a_view_and_shuffle_a_copy_with_no_params_and_no_macs():
    report = archcompiler.analyze(_UNIT)
    assert report["by_op"]["channel_split"]["macs"] == 0 and report["by_op"]["channel_shuffle"]["macs"] == 0
    assert report["by_op"]["channel_shuffle"]["elementwise"] == 16 * 10 * 10
    assert OPS["channel_split"].alias == "view" and OPS["channel_shuffle"].alias is None


def test_split_and_shuffle_memory_matches_a_measurement():
    """Inference peak exactly (the halves are views, the shuffle one new tensor); a training step
    within 1% (both halves' backward passes build a gradient of the whole input before autograd
    sums them), with the concat reading the left half first, as ShuffleNetV2 does."""
    pytest.importorskip("torch")
    assert_memory_measured(_UNIT)
    assert_memory_measured(_UNIT.replace("inputs: [left, pw]", "inputs: [pw, left]"), train_batch=None)


def test_split_and_shuffle_are_drawn_and_timed():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    source = build_dot(archcompiler.load_spec(_UNIT)).source
    assert "left\\nchannel split first half" in source and "shuffle\\nchannel shuffle groups 2" in source
    assert OPS["channel_split"].latency.kernel({"half": 0}, [(16, 10, 10)], (8, 10, 10)).kind == STATEMENT
    kernel = OPS["channel_shuffle"].latency.kernel({"groups": 2}, [(16, 10, 10)], (16, 10, 10))
    assert kernel.kind == "concat" and kernel.work == 16 * 10 * 10
