"""The table language of later papers: rows that repeat a block, layers that exist only when a
condition holds, a block's position in the network, torchvision's rounding rules, and a table of
the paper's variants; proven on ResNet's Table 1 (specs/resnet.yaml; tests/test_zoo.py checks its
builders against torchvision)."""

from __future__ import annotations

import pytest
from conftest import SPECS

import archcompiler
from archcompiler import SpecError
from archcompiler.spec import expr

RESNET = SPECS / "resnet.yaml"


def spec_text(body: str) -> str:
    return "name: t\ninput: [3, 16, 16]\n" + body


# ----------------------------------------------------------------------------- repeat

REPEATED = spec_text("""
blocks:
  unit:
    args: {out: 8, stride: 1}
    layers:
      - {name: conv, op: conv, out: out, kernel: 3, stride: stride, padding: 1}
layers:
  - table:
      use: unit
      columns: [name, out, stride, repeat]
      rows:
        - [stage1, 8, 1, 2]
        - [stage2, 16, 2, 3]
  - {name: head, use: unit, args: {out: 4}, repeat: 2}
""")


def test_a_repeated_row_is_a_group_of_instances_the_first_with_the_rows_stride():
    spec = archcompiler.load_spec(REPEATED)
    assert [layer.name for layer in spec.layers] == [
        "stage1/0/conv", "stage1/1/conv", "stage2/0/conv", "stage2/1/conv", "stage2/2/conv",
        "head/0/conv", "head/1/conv"]
    strides = {layer.name: layer.spec.stride for layer in spec.layers}
    assert strides["stage2/0/conv"] == 2 and strides["stage2/1/conv"] == strides["stage2/2/conv"] == 1
    assert spec.rows == ["stage1", "stage2", "head"]
    group = spec.instances["stage2"]
    assert group.output == "stage2/2/conv" and group.args == {"out": 16, "stride": 2, "repeat": 3}
    assert spec.instances["stage2/1"].parent == "stage2"
    # each instance reads the one before it; the group's first reads the row before
    assert spec.layer("stage2/0/conv").inputs == ("stage1/1/conv",)
    assert spec.layer("stage2/1/conv").inputs == ("stage2/0/conv",)
    rows = {r["name"]: r for r in archcompiler.analyze(spec)["rows"]}
    assert rows["stage2"]["output"] == [16, 8, 8] and rows["stage2"]["type"] == "unit"


def test_repeat_takes_an_expression_and_a_set_override():
    text = REPEATED.replace("[stage2, 16, 2, 3]", "[stage2, 16, 2, n]").replace(
        "blocks:", "params:\n  n: 2\nblocks:")
    assert len(archcompiler.load_spec(text).instances["stage2"].args) == 3
    spec = archcompiler.load_spec(text, overrides={"n": 4})
    assert spec.instances["stage2"].args["repeat"] == 4 and "stage2/3/conv" in {x.name for x in spec.layers}


# ----------------------------------------------------------------------------- conditions

RESIDUAL = spec_text("""
blocks:
  res:
    args: {out: 8, stride: 1}
    layers:
      - {name: conv, op: conv, out: out, kernel: 3, stride: stride, padding: 1}
      - {name: proj, op: conv, out: out, kernel: 1, stride: stride, input: in,
         when: "stride != 1 or in_channels != out"}
      - {name: add, op: add, inputs: [conv, proj]}
      - {name: gate, op: sigmoid, when: "in_height > 100"}
layers:
  - {name: stem, op: conv, out: 8, kernel: 3, padding: 1}
  - table:
      use: res
      columns: [name, out, stride]
      rows:
        - [same, 8, 1]
        - [wider, 16, 1]
        - [smaller, 16, 2]
""")


def test_a_layer_exists_only_where_its_condition_on_the_input_shape_holds():
    spec = archcompiler.load_spec(RESIDUAL)
    names = {layer.name for layer in spec.layers}
    assert "same/proj" not in names                        # 8 -> 8 channels, stride 1: identity
    assert {"wider/proj", "smaller/proj"} <= names        # channels change, or the stride does
    assert spec.layer("same/add").inputs == ("same/conv", "stem")      # the skipped layer's input
    assert spec.layer("wider/add").inputs == ("wider/conv", "wider/proj")
    assert not any(n.endswith("/gate") for n in names)
    assert spec.instances["smaller"].output == "smaller/add"    # a skipped last layer: the one before
    archcompiler.analyze(spec)


def test_a_block_use_with_a_false_condition_passes_its_input_on():
    text = spec_text("""
params: {deep: 0}
blocks:
  b:
    layers:
      - {name: c, op: conv, out: 4, kernel: 1}
layers:
  - {name: first, op: conv, out: 4, kernel: 1}
  - {name: extra, use: b, when: "deep == 1"}
  - {name: last, op: relu, input: extra}
""")
    assert archcompiler.load_spec(text).layer("last").inputs == ("first",)
    assert archcompiler.load_spec(text, overrides={"deep": 1}).layer("last").inputs == ("extra/c",)


@pytest.mark.parametrize("when, message", [
    ('"in_chanels != out"', "did you mean 'in_channels'?"),
    ('"stride"', "'when' must be true or false"),
    ('"in_channels >"', "cannot parse expression"),
])
def test_a_wrong_condition_is_located_with_a_hint(when, message):
    text = RESIDUAL.replace('"stride != 1 or in_channels != out"', when)
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    d = info.value.errors[0]
    assert message in f"{d.message} ({d.hint})" and d.line == 10


# ----------------------------------------------------------------------------- position

def test_a_block_knows_its_position_i_of_n():
    text = spec_text("""
blocks:
  b:
    args: {rate: 0.2}
    layers:
      - {name: c, op: conv, out: 4, kernel: 1}
      - {name: drop, op: dropout, p: "rate * i / N"}
layers:
  - {name: stem, op: conv, out: 4, kernel: 1}
  - table:
      use: b
      columns: [name, repeat]
      rows:
        - [s1, 2]
        - [s2, 3]
  - {name: tail, use: b}
""")
    spec = archcompiler.load_spec(text)
    rates = [layer.spec.p for layer in spec.layers if layer.op == "dropout"]
    assert rates == pytest.approx([0.2 * i / 6 for i in range(6)])


# ----------------------------------------------------------------------------- rounding

@pytest.mark.parametrize("v, divisor", [(32 * 0.75, 8), (16 * 1.4, 8), (96 * 0.35, 8), (24.0, 8), (100, 16)])
def test_rounding_functions_match_torchvision(v, divisor):
    def make_divisible(v, divisor, min_value=None):         # torchvision.models._utils._make_divisible
        min_value = divisor if min_value is None else min_value
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
        return new_v + divisor if new_v < 0.9 * v else new_v

    def round_to_multiple_of(val, divisor, round_up_bias=0.9):  # torchvision.models.mnasnet
        new_val = max(divisor, int(val + divisor / 2) // divisor * divisor)
        return new_val if new_val >= round_up_bias * val else new_val + divisor

    assert expr.evaluate(f"make_divisible({v}, {divisor})", {}) == make_divisible(v, divisor)
    assert expr.evaluate(f"round_to_multiple({v}, {divisor}, 0.9)", {}) == round_to_multiple_of(v, divisor)
    assert expr.evaluate(f"round_to_multiple({v}, {divisor}, 0.5)", {}) == round_to_multiple_of(v, divisor, 0.5)
    assert expr.evaluate("ceil(3 * 1.1)", {}) == 4


# ----------------------------------------------------------------------------- variants

def test_a_parameter_chooses_the_column_of_the_variants_table():
    text = spec_text("""
params: {size: small}
variants:
  by: size
  columns: [small, large]
  rows:
    width: [8, 32]
    kind: [plain, double]
blocks:
  plain:
    args: [out]
    layers: [{name: c, op: conv, out: out, kernel: 1}]
  double:
    args: [out]
    layers: [{name: c, op: conv, out: out, kernel: 1}, {name: d, op: conv, out: out, kernel: 1}]
layers:
  - {name: b, use: kind, args: {out: width}}
""")
    small = archcompiler.load_spec(text)
    assert [layer.name for layer in small.layers] == ["b/c"] and small.layers[0].spec.out == 8
    assert small.params == {"size": "small"}
    large = archcompiler.load_spec(text, overrides={"size": "large"})
    assert [layer.name for layer in large.layers] == ["b/c", "b/d"] and large.instances["b"].block == "double"


# ----------------------------------------------------------------------------- ResNet's Table 1

def test_resnet_is_written_as_the_papers_table():
    spec = archcompiler.load_spec(RESNET)
    assert spec.rows == ["conv1", "maxpool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "avgpool", "fc", "prob"]
    assert [spec.instances[r].args["repeat"] for r in ("conv2_x", "conv3_x", "conv4_x", "conv5_x")] == [3, 4, 6, 3]
    assert spec.instances["conv2_x"].block == "bottleneck"
    # torchvision's ResNet-50 is v1.5 (the stride in the 3x3): 4.09G multiply-adds where Table 1 prints 3.8G
    found = archcompiler.check(spec)
    assert [(d.path, d.severity) for d in found] == [("network", "warning")] and "3.8G" in found[0].message


def test_a_row_of_the_table_takes_a_set_override():
    spec = archcompiler.load_spec(RESNET, overrides={"depth": 18, "conv4_x.repeat": 1})
    assert spec.instances["conv4_x"].args["repeat"] == 1 and spec.instances["conv4_x"].block == "basic"
    assert "conv4_x/0/downsample" in {layer.name for layer in spec.layers}


def test_resnet18_keeps_its_own_spec():
    """specs/resnet18.yaml (spelt out block by block) and the table's depth-18 column agree."""
    a = archcompiler.analyze(SPECS / "resnet18.yaml")["total"]
    b = archcompiler.analyze(RESNET, overrides={"depth": 18})["total"]
    assert (a["params"], a["flops"]) == (b["params"], b["flops"])
