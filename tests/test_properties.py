"""Property-based tests.

1. Random *valid* specs drawn from the op vocabulary (chains, branches, concat, add, blocks, tables):
   the shapes archc infers equal the shapes of a real forward pass, its parameter count equals
   ``numel()``, and its MACs equal torch's FlopCounterMode / 2.
2. Random *mutations* of every shipped spec (4,000 seeded cases, through every torch-free command):
   each exits 0, 1 or 2 with located messages, never 3, never a traceback, never slowly.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
import re
import shutil

import pytest
import yaml
from conftest import ALL_SPECS, SPECS, no_hang
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import archcompiler
from archcompiler.cli import main

# ----------------------------------------------------------------------------- 1. valid specs


def _out(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _last(layers: list[dict]) -> str:
    """The name of the last layer (of a table: its last row)."""
    if not layers:
        return "input"
    item = layers[-1]
    return item["table"]["rows"][-1][0] if "table" in item else item["name"]


@st.composite
def valid_specs(draw: st.DrawFn) -> dict:
    start = [draw(st.integers(1, 4)), draw(st.integers(6, 20)), draw(st.integers(6, 20))]
    shape = list(start)
    layers: list[dict] = []
    blocks: dict = {}
    n = 0

    def name(prefix: str) -> str:
        nonlocal n
        n += 1
        return f"{prefix}{n}"

    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "act", "norm", "branch", "residual", "table",
                                     "lrn", "dropout"]))
        c, h, w = shape
        if kind == "conv":
            k, s, d = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
            p = draw(st.integers(0, 1))
            out = draw(st.integers(1, 8))
            groups = 2 if c % 2 == 0 and out % 2 == 0 and draw(st.booleans()) else 1
            oh, ow = _out(h, k, s, p, d), _out(w, k, s, p, d)
            if min(oh, ow) < 1:
                k, s, p, d, oh, ow = 1, 1, 0, 1, h, w
            layer = {"name": name("conv"), "op": "conv", "out": out, "kernel": k, "stride": s, "padding": p,
                     "dilation": d, "groups": groups, "act": draw(st.sampled_from(["none", "relu", "tanh", "silu"]))}
            if draw(st.booleans()):
                layer["norm"] = "batch_norm"
            layers.append(layer)
            shape = [out, oh, ow]
        elif kind == "pool":
            k, s = draw(st.integers(2, 3)), draw(st.integers(1, 2))
            p, ceil = draw(st.integers(0, k // 2)), draw(st.booleans())
            oh, ow = _out(h, k, s, p, ceil=ceil), _out(w, k, s, p, ceil=ceil)
            if min(oh, ow) < 1:
                continue
            op = draw(st.sampled_from(["max_pool", "avg_pool"]))
            layers.append({"name": name("pool"), "op": op, "kernel": k, "stride": s, "padding": p, "ceil_mode": ceil})
            shape = [c, oh, ow]
        elif kind == "act":
            layers.append({"name": name("act"), "op": draw(st.sampled_from(
                ["relu", "relu6", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"]))})
        elif kind == "norm":
            layers.append({"name": name("bn"), "op": "batch_norm"})
        elif kind == "lrn":
            layers.append({"name": name("lrn"), "op": "lrn", "size": draw(st.integers(1, 5))})
        elif kind == "dropout":
            layers.append({"name": name("drop"), "op": "dropout", "p": 0.3})
        elif kind == "branch":
            src = _last(layers)
            a, b = draw(st.integers(1, 6)), draw(st.integers(1, 6))
            na, nb, nc = name("br"), name("br"), name("cat")
            layers += [{"name": na, "op": "conv", "out": a, "kernel": 1, "input": src},
                       {"name": nb, "op": "conv", "out": b, "kernel": 3, "padding": 1, "input": src},
                       {"name": nc, "op": "concat", "inputs": [na, nb]}]
            shape = [a + b, h, w]
        elif kind == "residual":
            src = _last(layers)
            nr, na = name("res"), name("add")
            layers += [{"name": nr, "op": "conv", "out": c, "kernel": 3, "padding": 1, "input": src},
                       {"name": na, "op": "add", "inputs": [nr, src], "act": "relu"}]
        elif kind == "table":
            blocks.setdefault("unit", {"args": ["width"], "layers": [
                {"name": "reduce", "op": "conv", "out": "width", "kernel": 1},
                {"name": "mix", "op": "conv", "out": "width * 2", "kernel": 3, "padding": 1, "act": "relu"}]})
            widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
            layers.append({"table": {"use": "unit", "columns": ["name", "width"],
                                     "rows": [[name("row"), wd] for wd in widths]}})
            shape = [widths[-1] * 2, h, w]
    head = draw(st.sampled_from(["linear", "gap", "none"]))
    if head == "gap":
        layers.append({"name": "gap", "op": "global_avg_pool"})
    if head != "none" or not layers:
        layers.append({"name": "fc", "op": "linear", "out": draw(st.integers(1, 5))})
    spec = {"name": "random", "input": start, "layers": layers}
    if blocks:
        spec["blocks"] = blocks
    return spec


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs())
def test_random_valid_specs_match_torch(spec):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from archcompiler.passes import annotated_graph

    text = yaml.safe_dump(spec, sort_keys=False)
    try:
        loaded = archcompiler.load_spec(text)
        graph = annotated_graph(loaded)
    except archcompiler.GraphError:
        # the drawn shapes did not fit (the generator tracks one input size): not a valid spec, so not an example
        assume(False)
    model = archcompiler.build(loaded, seed=0)
    model.eval()
    seen: dict[str, tuple] = {}
    for node, path in model.archc.module_paths.items():
        model.get_submodule(path).register_forward_hook(
            lambda m, i, o, node=node: seen.__setitem__(node, tuple(o.shape[1:])))
    x = torch.randn(2, *loaded.input)
    with FlopCounterMode(display=False) as counter:
        y = model(x)
    for node, got in seen.items():
        assert got == graph.nodes[node]["shape"], (node, text)
    final = graph.graph["outputs"]["main"]["node"]
    assert tuple(y.shape[1:]) == graph.nodes[final]["shape"]
    report = archcompiler.analyze(loaded, batch=2)
    assert report["total"]["params"] == sum(p.numel() for p in model.parameters())
    assert 2 * report["total"]["macs"] == counter.get_total_flops()
    from archcompiler.measure.memory import measure_peak_activation_bytes
    assert report["peak_activation_bytes"] == measure_peak_activation_bytes(model, x), text


# ----------------------------------------------------------------------------- 2. mutations

VALUES = [3, 5, 7, 64, 100, 2, 0, -1, 1, 2.5, 1e9, 2**40, "x", "", "same", "valid", [], [1], [1, 2, 3], {},
          {"a": 1}, True, False, None, "num_classes * 2", "1/0", "round_to(", "9**9**9", "in", "input",
          "__import__('os')", "relu", "batch_norm", "conv", "concat", "max_pool", "inception_4a", "aux1",
          "prob", ".nan", float("inf"), "a" * 300, "x y", "self", "torch", "main", "googlenet.yaml",
          "../googlenet.yaml", "/etc/passwd", "1x1", "3x3_reduce * 2", "width", "in_channels != out",
          "stride == 1", "depth", "i / N", "bottleneck", {"by": "depth", "columns": [1], "rows": {"a": [1]}},
          # the newer syntax: positions, shape conditions, rename templates and rules, zoo names, builders
          "i", "N", "0.2 * i / N", "in_height > 7", "in_width", "make_divisible(in_channels * 6, 8)", "{index}",
          "features.{index}", "features.{index * 2 + 1}", "{i}", [["^(a|a)*$", "x"]], [["(\\w+)", "\\1.{index}"]],
          [["(a)\\1", "x"]], "resnet50", "resnet50.yaml", "/etc/shadow", {"tiny": {"sets": {"width": 0.5}}},
          {"when": "in_channels != out"}, {"use": "bottleneck", "repeat": 2}]
KEYS = ["zzz", "op", "name", "input", "inputs", "use", "table", "claims", "args", "extends", "edits", "_delete",
        "defaults", "init", "outputs", "params", "torch", "keep_claims", "loss", "weight", "training_only",
        "repeat", "when", "variants", "by", "columns", "rows", "builders", "rename", "class_name", "i", "N",
        "sets", "doc"]
LOCATED = re.compile(r":\d+:\d+: |--set |\"line\": [1-9]")
COMMANDS = [["validate"], ["flops"], ["flops", "--format", "json"], ["check"], ["resolve"], ["diff", "B"],
            ["draw", "--format", "dot", "-o", "OUT"], ["validate", "--format", "json"]]
# --set values written as YAML text that no Python value dumps to: aliases, deep nesting, tags
RAW_VALUES = ["&a [*a]", "&a {x: *a}", "[" * 100 + "]" * 100, "!!python/name:os.system", "[1, 2", "{a: &b [1], c: [*b, *b]}"]
# 3,000 mutated specs (5 to 25 ms each, more for the larger networks) in 10 chunks, one in the quick tier
TOTAL, CHUNKS = 3_000, 10


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def mutate(doc, r: random.Random):
    doc = copy.deepcopy(doc)
    candidates = [p for p in _paths(doc) if p]
    for _ in range(r.randint(1, 3)):
        path = r.choice(candidates)
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            roll = r.random()
            if roll < 0.6:
                node[path[-1]] = r.choice(VALUES)
            elif roll < 0.8 and isinstance(node, dict):
                node[r.choice(KEYS)] = r.choice(VALUES)
            elif roll < 0.9 and isinstance(node, list):
                node.append(copy.deepcopy(r.choice(node)) if node else r.choice(VALUES))
            else:
                del node[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass
    return doc


def mangle_text(text: str, r: random.Random) -> str:
    chars = list(text)
    for _ in range(r.randint(1, 4)):
        i = r.randrange(len(chars))
        chars[i] = r.choice(["", ":", "-", "{", "]", " ", "\t", "x", "0", "'", "&", "*", "!", "\x00", "\udcff",
                             "é", "\n", "#", "%", "|", ">", "@"])
    return "".join(chars)


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("specs")
    for path in ALL_SPECS:
        shutil.copy(path, folder / path.name)
    return folder


def _case(seed: int, folder) -> tuple[list[str], str]:
    r = random.Random(seed)
    source = r.choice(ALL_SPECS)
    text = source.read_text()
    target = folder / f"case_{seed % 7}.yaml"
    roll = r.random()
    if roll < 0.6:
        text = yaml.safe_dump(mutate(yaml.safe_load(text), r), sort_keys=False, allow_unicode=True)
    elif roll < 0.85:
        text = mangle_text(text, r)
    command = [*r.choice(COMMANDS)]
    args = [command[0], str(target), *command[1:]]
    args = [str(folder / source.name) if a == "B" else str(folder / "out.dot") if a == "OUT" else a for a in args]
    if roll >= 0.85:       # the file as shipped, a hostile --set
        key = r.choice(["num_classes", "width", "conv1.out", "inception_4b.5x5", "outputs.main.weight",
                        "params.x", "layers", "input", "torch.class_name", "defaults.conv.act", "fc.out",
                        "init.conv.kind", "extends", "name", "depth", "conv4_x.repeat"])
        value = r.choice(VALUES)
        text_value = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()
        args += ["--set", f"{key}={r.choice(RAW_VALUES) if r.random() < 0.2 else text_value}"]
    target.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return args, text


@pytest.mark.parametrize("chunk", [0, *(pytest.param(c, marks=pytest.mark.slow) for c in range(1, CHUNKS))])
def test_mutated_specs_never_reach_an_internal_error(chunk, spec_dir):
    for seed in range(chunk * TOTAL // CHUNKS, (chunk + 1) * TOTAL // CHUNKS):
        args, _ = _case(seed, spec_dir)
        out, err = io.StringIO(), io.StringIO()
        with no_hang(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code
        text = out.getvalue() + err.getvalue()
        assert code in (0, 1, 2), f"seed {seed}: exit {code}: {args}\n{text[-2000:]}"
        assert "internal error" not in text and "Traceback" not in text, f"seed {seed}: {args}\n{text[-2000:]}"
        if code == 1:
            assert LOCATED.search(text), f"seed {seed}: unlocated message: {args}\n{text[-2000:]}"


@pytest.mark.slow
def test_mutated_specs_that_validate_also_build(spec_dir):
    """The torch backend sees mutated specs too (fewer: building imports and runs torch)."""
    import torch

    from archcompiler.passes import infer_shapes

    built = 0
    for seed in range(200_000, 200_400):
        r = random.Random(seed)
        source = r.choice([SPECS / "googlenet-small.yaml", SPECS / "resnet18.yaml", SPECS / "googlenet.yaml"])
        text = yaml.safe_dump(mutate(yaml.safe_load(source.read_text()), r), sort_keys=False)
        target = spec_dir / "build_case.yaml"
        target.write_text(text)
        try:
            spec = archcompiler.load_spec(target)
            infer_shapes(archcompiler.lower(spec))
        except archcompiler.ArchcError:
            continue
        try:
            model = archcompiler.build(spec, seed=0)
        except archcompiler.ArchcError as exc:
            assert exc.errors and all(d.message for d in exc.errors)
            continue
        built += 1
        model.eval()
        with torch.no_grad():
            model(torch.randn(1, *spec.input))
        if built >= 12:
            break
    assert built >= 5
