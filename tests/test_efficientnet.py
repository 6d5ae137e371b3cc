"""EfficientNet-B0..B7 (Table 1 with compound scaling) and EfficientNetV2-S/M/L (Table 4), written as
the papers' tables, torchvision's eleven builders (tests/test_zoo.py checks them against torchvision); and the language
they use: a repeat count computed from a column (ceil(n * depth_mult)), defaults and a conv's norm
settings read from parameters, a nested block's arguments reading the block input's channels."""

from __future__ import annotations

import json
import math

import pytest
from conftest import DATA, SPECS

import archcompiler
from archcompiler import SpecError

V1, V2 = SPECS / "efficientnet.yaml", SPECS / "efficientnet_v2.yaml"
B = [f"efficientnet_b{k}" for k in range(8)]
V2_BUILDERS = ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]
# torchvision's compound scaling: (width_mult, depth_mult) of b0 .. b7
SCALING = [(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8), (1.6, 2.2), (1.8, 2.6), (2.0, 3.1)]
TABLE_1_LAYERS = [1, 2, 2, 3, 3, 4, 1]


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    """torchvision's inputs, keys, params, FLOPs (and logits) of the EfficientNets (tests/data/README.md)."""
    return json.loads((DATA / "torchvision_efficientnet.json").read_text())["builders"]


def _blocks(spec, row: str) -> int:
    return spec.instances[row].args["repeat"]


# ----------------------------------------------------------------------------- the papers' tables

@pytest.mark.parametrize("k", range(8))
def test_compound_scaling_deepens_each_row_by_ceil_and_widens_by_make_divisible(k):
    width, depth = SCALING[k]
    spec = archcompiler.load_spec(V1, overrides={"variant": f"b{k}"})
    rows = [f"stage{j}" for j in range(2, 9)]
    assert [_blocks(spec, r) for r in rows] == [math.ceil(n * depth) for n in TABLE_1_LAYERS]
    assert [spec.instances[r].args["n"] for r in rows] == TABLE_1_LAYERS        # the paper's #Layers
    stem = spec.layer("stage1").spec.out
    assert stem == max(8, int(32 * width + 4) // 8 * 8) and stem % 8 == 0
    assert spec.layer("stage9").spec.out == 4 * spec.layer("stage8/0/project").spec.out


def test_mbconv_rows_expand_squeeze_and_add_where_table_1_says():
    spec = archcompiler.load_spec(V1)
    names = {layer.name for layer in spec.layers}
    assert "stage2/0/expand" not in names and "stage3/0/expand" in names      # MBConv1 / MBConv6
    assert spec.layer("stage4/0/dwise").spec.kernel == 5 and spec.layer("stage5/0/dwise").spec.kernel == 3
    # SE squeezes to a quarter of the block's input (torchvision: max(1, input_channels // 4))
    assert spec.layer("stage3/0/se/fc1").spec.out == 16 // 4
    assert spec.layer("stage3/1/se/fc1").spec.out == 24 // 4
    assert spec.layer("stage3/0/se/fc1").spec.act == "silu" and spec.layer("stage3/0/se/fc2").spec.act == "sigmoid"
    assert "stage3/0/add" not in names and "stage3/1/add" in names and "stage6/0/add" not in names
    assert archcompiler.check(spec) == []


@pytest.mark.parametrize("name, total", [("efficientnet_b0", 16), ("efficientnet_b7", 55),
                                         ("efficientnet_v2_s", 40), ("efficientnet_v2_m", 57)])
def test_stochastic_depth_follows_torchvisions_block_count(name, total):
    """torchvision: 0.2 * block_id / total_stage_blocks, the block counted from 0 over every stage,
    on the residual blocks only (V2-S has no seventh stage, and N does not count it)."""
    spec = archcompiler.load_spec(name)
    blocks = [r for r in spec.instances if r.count("/") == 1 and r.startswith("stage")]
    assert len(blocks) == total
    rates = {layer.name.rsplit("/", 1)[0]: layer.spec.p for layer in spec.layers if layer.spec.op == "stochastic_depth"}
    assert rates and all(rates[b] == pytest.approx(0.2 * blocks.index(b) / total) for b in rates)


def test_batch_norm_settings_follow_the_variant():
    for name, eps, momentum in [("efficientnet_b0", 1e-5, 0.1), ("efficientnet_b5", 1e-3, 0.01),
                                ("efficientnet_v2_s", 1e-3, 0.1)]:
        spec = archcompiler.load_spec(name)
        norms = {(layer.spec.norm.eps, layer.spec.norm.momentum) for layer in spec.layers
                 if layer.spec.op == "conv" and layer.spec.norm is not None}
        assert norms == {(eps, momentum)}, name


def test_v2_is_table_4_fused_then_mbconv():
    spec = archcompiler.load_spec(V2)
    names = {layer.name for layer in spec.layers}
    assert "stage1/0/fused" in names and "stage1/0/expand" not in names           # Fused-MBConv1
    assert "stage2/0/expand" in names and spec.layer("stage2/0/expand").spec.kernel == 3
    assert "stage3/0/se/fc1" not in names and "stage4/0/se/fc1" in names          # SE0.25 on MBConv only
    assert "stage7" not in spec.instances                                        # M and L only
    assert _blocks(archcompiler.load_spec(V2, overrides={"variant": "l"}), "stage7") == 7
    assert archcompiler.check(spec) == []


def test_torchvisions_own_figures(reference):
    """torchvision's num_params; its GFLOPS are multiply-adds (tests/test_zoo.py checks the rest)."""
    for builder in B + V2_BUILDERS:
        total = archcompiler.analyze(builder)["total"]
        assert total["params"] == reference[builder]["tv_meta"]["num_params"]
        assert round(total["macs"] / 1e9, 2) == round(reference[builder]["tv_meta"]["gflops"], 2)


# ----------------------------------------------------------------------------- the language

TABLE = """name: t
input: [3, 16, 16]
params: {depth_mult: 1.5, eps: 0.001}
defaults:
  conv: {norm: {kind: batch_norm, eps: eps}}
blocks:
  gate:
    args: [squeeze]
    layers:
      - {name: fc, op: conv, out: squeeze, kernel: 1, norm: null}
  unit:
    args: {c: 8, s: 1}
    stride: s
    output: conv
    layers:
      - {name: conv, op: conv, out: c, kernel: 3, stride: s, padding: 1}
      - {name: se, use: gate, args: {squeeze: "in_channels // 2"}}
layers:
  - table:
      use: unit
      repeat: "ceil(n * depth_mult)"
      columns: [name, c, n, s]
      rows:
        - [stage1, 8, 2, 2]
        - [stage2, 16, 1, 1]
"""


def test_a_repeat_computed_from_a_column_defaults_from_parameters_and_nested_shapes():
    spec = archcompiler.load_spec(TABLE)
    assert spec.instances["stage1"].args == {"c": 8, "s": 2, "n": 2, "repeat": 3}
    assert spec.instances["stage2"].args["repeat"] == 2
    assert spec.layer("stage1/0/conv").spec.norm.eps == 0.001
    # the nested block's argument reads the enclosing block's input: 3 channels, then 8, 8, 8
    assert [spec.layer(f"stage1/{k}/se/fc").spec.out for k in range(3)] == [1, 4, 4]
    assert spec.layer("stage2/0/se/fc").spec.out == 4
    deeper = archcompiler.load_spec(TABLE, overrides={"depth_mult": 2.0})
    assert deeper.instances["stage1"].args["repeat"] == 4


@pytest.mark.parametrize("change, message", [
    (('repeat: "ceil(n * depth_mult)"', 'repeat: "ceil(depth_mult)"'), "names none of the columns"),
    (('repeat: "ceil(n * depth_mult)"', 'repeat: "ceil(n * depth_mul)"'), "unknown name 'depth_mul'"),
    (('repeat: "ceil(n * depth_mult)"', 'repeat: "n - 2"'), "repeat takes a whole number from 1"),
    (("eps: eps}", "eps: epss}"), "epss"),
    (('"in_channels // 2"', '"in_chanels // 2"'), "unknown name 'in_chanels'"),
])
def test_mistakes_in_the_new_forms_are_located(change, message):
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(TABLE.replace(*change))
    d = info.value.errors[0]
    assert message in d.message and d.line > 0
