"""ConvNeXt (T, S, B, L: specs/convnext.yaml, the paper's stage table) against torchvision's
convnext_tiny / small / base / large: state_dict keys in order with their shapes, parameter counts,
FLOPs and convnext_tiny's logits (tests/data/torchvision_convnext.json, tests/data/README.md); and its
ops (layer_norm, linear over channels, layer_scale) against torch's own modules and measured memory."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, assert_memory_measured

import archcompiler

BUILDERS = {"convnext_tiny": "T", "convnext_small": "S", "convnext_base": "B", "convnext_large": "L"}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return json.loads((DATA / "torchvision_convnext.json").read_text())["builders"]


def test_every_builder_has_its_reference_and_its_column():
    data = json.loads((DATA / "torchvision_convnext.json").read_text())["builders"]
    assert set(data) == set(BUILDERS)
    for builder, size in BUILDERS.items():
        assert archcompiler.load_spec(builder).params["size"] == size


# (tests/test_zoo.py checks every builder's keys, parameters, FLOPs and logits against torchvision's)


# ----------------------------------------------------------------------------- the paper's table

def test_the_stage_table_is_the_papers():
    """C = (96, 192, 384, 768) and B = (3, 3, 9, 3) for T; B = (3, 3, 27, 3) for S, B and L; C starts
    at 128 for B and 192 for L; each stage halves the map (56, 28, 14, 7)."""
    for builder, c1, b3 in (("convnext_tiny", 96, 9), ("convnext_small", 96, 27),
                            ("convnext_base", 128, 27), ("convnext_large", 192, 27)):
        spec = archcompiler.load_spec(builder)
        assert [spec.instances[f"res{s}"].args["repeat"] for s in (2, 3, 4, 5)] == [3, 3, b3, 3]
        rows = {r["name"]: r for r in archcompiler.analyze(spec)["rows"]}
        assert [rows[f"res{s}"]["output"] for s in (2, 3, 4, 5)] == [
            [c1, 56, 56], [2 * c1, 28, 28], [4 * c1, 14, 14], [8 * c1, 7, 7]]


def test_stochastic_depth_grows_linearly_over_all_blocks_as_torchvision():
    """torchvision: block i of N has rate stochastic_depth_prob * i / (N - 1) (0.1 for tiny)."""
    spec = archcompiler.load_spec("convnext_tiny")
    rates = [layer.spec.p for layer in spec.layers if layer.op == "stochastic_depth"]
    assert len(rates) == 18
    assert rates == pytest.approx([0.1 * i / 17 for i in range(18)])
    assert [layer.spec.p for layer in archcompiler.load_spec("convnext_large").layers
            if layer.op == "stochastic_depth"][-1] == pytest.approx(0.5)


def test_layer_scale_starts_at_one_millionth_and_the_weights_as_torchvision():
    """torchvision: layer_scale = ones(C, 1, 1) * 1e-6; Conv2d and Linear trunc_normal(std 0.02), zero
    biases; LayerNorm ones and zeros (checked on the small block below: building ConvNeXt is slow)."""
    torch = pytest.importorskip("torch")
    spec = archcompiler.load_spec("convnext_tiny")
    assert {layer.spec.init for layer in spec.layers if layer.op == "layer_scale"} == {1e-6}
    for kind in ("conv", "linear"):
        rule = spec.init[kind]
        assert (rule.kind, rule.std, rule.bias) == ("trunc_normal", 0.02, 0)
    model = archcompiler.build(_BLOCK.replace("init: 0.5", "init: 1.0e-6") + "init:\n"
                               "  linear: {kind: trunc_normal, std: 0.02, bias: 0}\n", seed=0)
    assert torch.equal(model.s.detach(), torch.full((16, 1, 1), 1e-6))
    assert model.l.bias.abs().max().item() == 0 and model.l.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(model.n.weight.detach(), torch.ones(16)) and torch.equal(model.n.bias.detach(), torch.zeros(16))


# ----------------------------------------------------------------------------- the ops against torch

_BLOCK = ("name: t\ninput: [8, 12, 12]\nlayers:\n"
          "  - {name: c, op: conv, out: 16, kernel: 3, padding: 1}\n"
          "  - {name: n, op: layer_norm, eps: 1.0e-6}\n"
          "  - {name: l, op: linear, over: channels, out: 64, act: gelu}\n"
          "  - {name: l2, op: linear, over: channels, out: 16}\n"
          "  - {name: s, op: layer_scale, init: 0.5}\n"
          "  - {name: p, op: global_avg_pool}\n"
          "  - {name: fc, op: linear, out: 2}\n")


def test_the_ops_compute_torchvisions_cnblock():
    """torchvision's CNBlock.block: Permute, LayerNorm, Linear, GELU, Linear, Permute; times layer_scale."""
    torch = pytest.importorskip("torch")
    from torch import nn

    model = archcompiler.build(_BLOCK, seed=0).eval()
    ln = nn.LayerNorm(16, eps=1e-6)
    ln.load_state_dict(model.n.state_dict())
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        c = model.c(x).permute(0, 2, 3, 1)
        branch = model.l2(nn.functional.gelu(model.l(ln(c)))).permute(0, 3, 1, 2)
        expected = model.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(model.s * branch, 1), 1))
        assert torch.allclose(model(x), expected, rtol=0, atol=1e-6)
    assert tuple(model.l.weight.shape) == (64, 16) and tuple(model.s.shape) == (16, 1, 1)


def test_linear_over_channels_counts_a_1x1_convolutions_macs_and_is_timed_like_one():
    from archcompiler.ir import OPS

    report = archcompiler.analyze(_BLOCK)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["l"]["macs_per_sample"] == 12 * 12 * 16 * 64 and rows["l"]["output"] == [64, 12, 12]
    assert rows["s"]["params"] == 16 and rows["n"]["params"] == 32
    kernel = OPS["channel_linear"].latency.kernel({"out_features": 64, "bias": True}, [(16, 12, 12)], (64, 12, 12))
    assert kernel.kind == "conv1x1" and kernel.work == 12 * 12 * 16 * 64


def test_linear_over_channels_needs_an_image():
    from archcompiler import GraphError

    text = ("name: t\ninput: [8, 4, 4]\nlayers:\n  - {name: f, op: flatten}\n"
            "  - {name: l, op: linear, over: channels, out: 4}\n")
    with pytest.raises(GraphError) as info:
        archcompiler.analyze(text)
    assert "a linear over channels needs an image" in info.value.errors[0].message


@pytest.mark.parametrize("body", [
    "  - {name: n, op: layer_norm, eps: 1.0e-6}\n",
    "  - {name: s, op: layer_scale}\n",
    "  - {name: n, op: layer_norm}\n  - {name: l, op: linear, over: channels, out: 64, act: gelu}\n"
    "  - {name: l2, op: linear, over: channels, out: 16}\n  - {name: s, op: layer_scale}\n",
], ids=["layer_norm", "layer_scale", "block"])
def test_memory_matches_a_measurement(body):
    """Inference peak exactly; a training step within 1% (LayerNorm keeps mean and 1 / std per
    position; the layer scale's gradient is computed at the map's size, then summed down)."""
    pytest.importorskip("torch")
    assert_memory_measured("name: t\ninput: [8, 12, 12]\nlayers:\n  - {name: c, op: conv, out: 16, kernel: 3, "
                           "padding: 1}\n" + body + "  - {name: p, op: global_avg_pool}\n  - {name: fc, op: linear, out: 2}\n")


def test_the_new_ops_are_drawn():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    dot = build_dot(archcompiler.load_spec(_BLOCK)).source
    assert "n\\nlayer norm" in dot and "s\\nlayer scale" in dot and "l\\nlinear 64 per position + gelu" in dot


# ----------------------------------------------------------------------------- the paper's own numbers

@pytest.mark.parametrize("builder, params, ops", [("convnext_tiny", "28M", "4.5G"), ("convnext_small", "50M", "8.7G"),
                                                  ("convnext_base", "89M", "15.4G"), ("convnext_large", "198M", "34.4G")])
def test_the_network_claims_are_the_papers_table_1_for_its_column(builder, params, ops):
    spec = archcompiler.load_spec(builder)
    assert (spec.claims.params, spec.claims.ops) == (params, ops)


def test_check_reports_where_the_paper_rounds_down():
    """ConvNeXt-T has 28.59M parameters, which the paper prints as 28M (2.1% off); the others agree."""
    (found,) = archcompiler.check("convnext_tiny")
    assert found.severity == "warning" and found.path == "network"
    assert "params: the paper says 28M" in found.message and "28,589,128" in found.message
    assert (found.line, found.column) == (49, 11)            # the claim's own cell
    assert archcompiler.check("convnext_tiny", tolerance=0.03) == []
    assert all(archcompiler.check(b) == [] for b in ("convnext_small", "convnext_base", "convnext_large"))


def test_network_claims_without_variants_and_a_variant_drops_them(tmp_path):
    from archcompiler import SpecError

    text = "name: t\ninput: [3, 8, 8]\nclaims: {params: 112, ops: [1K]}\nlayers:\n  - {name: c, op: conv, out: 4, kernel: 3}\n"
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    assert "claims.ops is a list, but the spec has no variants" in info.value.errors[0].message
    spec = archcompiler.load_spec(text.replace(", ops: [1K]", ""))
    assert spec.claims.params == 112 and archcompiler.check(spec) == []
    found = archcompiler.check(text.replace(", ops: [1K]", "").replace("112", "200"))
    assert [d.path for d in found] == ["network"]
    parent = tmp_path / "parent.yaml"
    parent.write_text(text.replace(", ops: [1K]", ""))
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\nname: child\n")
    assert archcompiler.load_spec(tmp_path / "child.yaml").claims is None


# ----------------------------------------------------------------------------- a parameter as a node's path

def test_a_layer_scale_is_copied_into_the_optimised_module_and_frozen_with_its_block():
    """layer_scale's path names a parameter (torchvision's key), not a submodule: --optimize copies
    it, --freeze stops it training, and a checkpoint's mismatch names its layer."""
    torch = pytest.importorskip("torch")
    from archcompiler.backends.torch.weights import freeze
    from archcompiler.passes import annotated_graph

    text = _BLOCK.replace("init: 0.5", "init: 0.25")
    model = archcompiler.build(text, seed=0).eval()
    optimized = archcompiler.build(text, seed=0, optimize=True)
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        assert torch.allclose(optimized(x), model(x), rtol=0, atol=1e-5)
    assert torch.equal(optimized.s.detach(), torch.full((16, 1, 1), 0.25))
    spec = archcompiler.load_spec(text)
    frozen, _ = freeze(model, annotated_graph(spec), spec, "s")
    assert not model.s.requires_grad and not model.l2.weight.requires_grad and model.fc.weight.requires_grad
    assert model.n in frozen and model.s not in frozen
