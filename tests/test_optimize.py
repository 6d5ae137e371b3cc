"""Inference optimisation: each pass alone on small graphs (where it fires and where it must not),
and the optimised module against the ordinary one (torchvision's recipe weights, every shipped spec
with random weights and non-trivial BatchNorm statistics)."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import SPECS, TIERED_SPECS, TORCHVISION_SPECS, recipe_input, recipe_weights, run_archc

import archcompiler
from archcompiler.passes import annotated_graph
from archcompiler.passes.optimize import choose_layout, eval_only, fold_batch_norm, fuse_activation, optimize


def graph(layers: list[dict], outputs: dict | None = None, input_shape=(3, 8, 8)):
    doc = {"name": "t", "input": list(input_shape), "layers": layers}
    if outputs:
        doc["outputs"] = outputs
    return annotated_graph(archcompiler.load_spec(yaml.safe_dump(doc)))


def ops(g) -> list[str]:
    return sorted(d["op"] for n, d in g.nodes(data=True) if n != "input")


# ----------------------------------------------------------------------------- each pass alone

def test_passes_are_pure():
    g = graph([{"name": "c", "op": "conv", "out": 4, "kernel": 3, "norm": "batch_norm", "act": "relu"}])
    before = (sorted(g.nodes), {n: dict(d["attrs"]) for n, d in g.nodes(data=True)})
    optimize(g)
    assert (sorted(g.nodes), {n: dict(d["attrs"]) for n, d in g.nodes(data=True)}) == before


def test_fold_batch_norm_fires_after_a_conv_read_once():
    g = fold_batch_norm(graph([{"name": "c", "op": "conv", "out": 4, "kernel": 3, "norm": "batch_norm"}]))
    assert ops(g) == ["conv2d"] and g.nodes["c/conv"]["attrs"]["bias"] is True
    assert g.nodes["c/conv"]["attrs"]["folded_bn"]["node"] == "c/bn"


@pytest.mark.parametrize("layers,outputs", [
    # the conv's output is read twice: by the BatchNorm and by an add
    ([{"name": "c", "op": "conv", "out": 3, "kernel": 3, "padding": 1},
      {"name": "bn", "op": "batch_norm"}, {"name": "sum", "op": "add", "inputs": ["c", "bn"]}], None),
    # BatchNorm after a pool, not a conv
    ([{"name": "p", "op": "max_pool", "kernel": 2}, {"name": "bn", "op": "batch_norm"}], None),
    # the conv is a model output itself
    ([{"name": "c", "op": "conv", "out": 3, "kernel": 3, "padding": 1}, {"name": "bn", "op": "batch_norm"}],
     {"main": {"layer": "bn"}, "raw": {"layer": "c"}}),
])
def test_fold_batch_norm_does_not_fire_where_it_would_change_the_result(layers, outputs):
    g = graph(layers, outputs)
    assert "batch_norm2d" in ops(fold_batch_norm(g))


def test_fuse_activation_fires_and_does_not():
    g = fuse_activation(graph([{"name": "c", "op": "conv", "out": 4, "kernel": 3, "act": "relu"}]))
    assert ops(g) == ["conv2d"] and g.nodes["c"]["attrs"]["act"] == "relu"
    for layers in (
        [{"name": "c", "op": "conv", "out": 4, "kernel": 3, "act": "sigmoid"}],        # not a fusable kind
        [{"name": "c", "op": "conv", "out": 3, "kernel": 3, "padding": 1},              # conv read twice
         {"name": "r", "op": "relu"}, {"name": "sum", "op": "add", "inputs": ["c", "r"]}],
        [{"name": "c", "op": "conv", "out": 4, "kernel": 3, "padding": "same"},         # 'same' padding
         {"name": "r", "op": "relu"}],
        [{"name": "p", "op": "max_pool", "kernel": 2}, {"name": "r", "op": "relu"}],   # after a pool
    ):
        assert "activation" in ops(fuse_activation(graph(layers)))


def test_eval_only_removes_heads_and_dropout():
    g = annotated_graph(archcompiler.load_spec(SPECS / "googlenet.yaml"))
    e = eval_only(g)
    assert not any(d["training_only"] for _, d in e.nodes(data=True))
    assert "dropout" not in ops(e) and list(e.graph["outputs"]) == ["main"]
    assert not any(n.startswith("aux") for n in e.nodes)


def test_layout_is_chosen_for_convolution_networks_only():
    assert choose_layout(graph([{"name": "c", "op": "conv", "out": 4, "kernel": 3}])).graph["memory_format"] == \
        "channels_last"
    assert "memory_format" not in choose_layout(graph([{"name": "f", "op": "linear", "out": 4}])).graph


def test_optimized_analysis_shows_what_the_passes_removed():
    plain = archcompiler.analyze(SPECS / "googlenet-torchvision.yaml")
    report = archcompiler.analyze(SPECS / "googlenet-torchvision.yaml", optimized=True)
    assert report["total"]["macs"] == plain["total"]["macs"]                   # folding removes no MACs
    assert report["optimized"]["macs"] == 0 and report["optimized"]["elementwise"] > 0
    # 57 BatchNorms (2 x 64 params each... per channel) become 57 conv biases (1 per channel)
    assert report["total"]["params"] == plain["total"]["params"] - 7_280
    removed = {p["pass"]: len(p.get("removed", [])) for p in report["optimized"]["passes"]}
    assert removed["fold_batch_norm"] == 57 and removed["fuse_activation"] == 57
    result = run_archc("flops", str(SPECS / "googlenet-torchvision.yaml"), "--optimized")
    assert result.returncode == 0 and "57 BatchNorm folded into convolutions" in result.stdout

def test_optimized_drawing_has_fewer_nodes(tmp_path):
    for flag, name in ((), "plain.dot"), (("--optimized",), "fast.dot"):
        result = run_archc("draw", str(SPECS / "googlenet-torchvision.yaml"), *flag, "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    count = {name: (tmp_path / name).read_text().count("[label=") for name in ("plain.dot", "fast.dot")}
    assert count["fast.dot"] < count["plain.dot"]
    assert "BN" not in (tmp_path / "fast.dot").read_text().replace("BNorm", "")


# ----------------------------------------------------------------------------- the module

def _randomise_batch_norm(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


FUSED = ["eval_only", "fold_batch_norm", "fuse_activation", "fuse_siblings", "choose_layout"]


@pytest.mark.parametrize("passes", [None, FUSED], ids=["default", "fuse_siblings"])
@pytest.mark.parametrize("path", TIERED_SPECS, ids=lambda p: p.stem)
def test_optimized_module_equals_the_ordinary_one(path, passes):
    spec = archcompiler.load_spec(path)
    base = archcompiler.build(spec, seed=0)
    _randomise_batch_norm(base)
    fast = archcompiler.build(spec, weights=base.state_dict(), optimize=passes or True)
    base.eval()
    x = torch.randn(2, *spec.input)
    with torch.no_grad():
        expected, got = base(x), fast(x)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    if passes is None:
        assert sum(p.numel() for p in fast.parameters()) == \
            archcompiler.analyze(spec, optimized=True)["total"]["params"]
        with pytest.raises(RuntimeError, match="optimised for inference"):
            fast.train()


@pytest.mark.parametrize("net", sorted(TORCHVISION_SPECS))
def test_published_weights_work_with_the_optimized_module(net, torchvision_reference, tmp_path):
    ref = torchvision_reference[net]
    weights = tmp_path / "torchvision.pth"
    torch.save(recipe_weights(ref["keys"]), weights)
    fast = archcompiler.build(SPECS / TORCHVISION_SPECS[net], weights=weights, optimize=True)
    with torch.no_grad():
        logits = fast(recipe_input())
    expected = torch.tensor(ref["logits"])
    assert (logits - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


@pytest.mark.slow
def test_emit_python_optimize_writes_the_optimized_source(tmp_path):
    out = tmp_path / "fast.py"
    result = run_archc("build", str(SPECS / "googlenet-torchvision.yaml"), "--optimize", "--emit", "python",
                       "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    source = out.read_text()
    assert "conv_act(" in source and "channels_last" in source and "if self.training:" not in source
    assert "bn" not in "".join(line.split("#")[0] for line in source.splitlines() if "self.inception3a" in line)
    refused = run_archc("build", str(SPECS / "googlenet-small.yaml"), "--optimize", "-o", str(tmp_path / "m.pt"))
    assert refused.returncode == 1 and "optimize=True" in refused.stderr


def test_compile_wraps_or_says_why_not(tmp_path, monkeypatch, capsys):
    from archcompiler.backends.torch.optimized import compile_module

    model = archcompiler.build(yaml.safe_dump({"name": "tiny", "input": [3, 8, 8], "layers": [
        {"name": "c", "op": "conv", "out": 4, "kernel": 3, "act": "relu"}, {"name": "f", "op": "linear", "out": 2}]}),
        seed=0, optimize=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)

    def unavailable(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")
    monkeypatch.setattr(torch, "compile", unavailable)
    same = compile_module(model, x)
    assert same is model and "torch.compile is not available here (no C++ compiler found)" in capsys.readouterr().err
    with torch.no_grad():
        assert torch.equal(same(x), expected)


def test_optimized_model_loads_from_a_model_file(tmp_path):
    model = archcompiler.build(SPECS / "googlenet-small.yaml", seed=0)
    archcompiler.save_model(model, tmp_path / "m.pt")
    fast = archcompiler.load_model(tmp_path / "m.pt", optimize=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fast(x), model.eval()(x), atol=1e-5)


# ----------------------------------------------------------------------------- horizontal fusion

def test_fuse_siblings_fires_on_each_inception_module():
    from archcompiler.passes.optimize import fuse_siblings

    g = fuse_siblings(optimize(annotated_graph(archcompiler.load_spec(SPECS / "googlenet-torchvision.yaml"))))
    widths = [g.nodes[n]["attrs"]["out_channels"] for n in g.nodes if n.endswith("+siblings")]
    assert widths == [176, 288, 304, 296, 280, 288, 448, 448, 624]       # #1x1 + #3x3 reduce + #5x5 reduce
    assert sum(1 for _, d in g.nodes(data=True) if d["op"] == "channel_slice") == 27


@pytest.mark.parametrize("second", [
    {"name": "b", "op": "conv", "out": 2, "kernel": 1, "input": "a"},               # reads another tensor
    {"name": "b", "op": "conv", "out": 2, "kernel": 1, "stride": 2, "input": "input"},   # another stride
    {"name": "b", "op": "conv", "out": 2, "kernel": 3, "padding": 1, "input": "input"},  # 3x3 with padding
    {"name": "b", "op": "conv", "out": 2, "kernel": 1, "act": "relu", "input": "input"},  # another activation
])
def test_fuse_siblings_does_not_fire_for_unlike_convolutions(second):
    from archcompiler.passes.optimize import fuse_siblings

    layers = [{"name": "a", "op": "conv", "out": 3, "kernel": 1},
              second, {"name": "p", "op": "global_avg_pool", "input": "b"},
              {"name": "q", "op": "global_avg_pool", "input": "a"}, {"name": "cat", "op": "concat", "inputs": ["p", "q"]}]
    g = fuse_siblings(fuse_activation(graph(layers)))      # a fused ReLU makes convolutions unlike
    assert "channel_slice" not in ops(g)
