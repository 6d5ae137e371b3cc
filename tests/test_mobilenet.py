"""MobileNetV2 (Table 2) and MobileNetV3 (Tables 1 and 2) written as the papers' tables, exact to
torchvision's mobilenet_v2, mobilenet_v3_large and mobilenet_v3_small (tests/data/README.md); and
the table language they use: a repeat column and a stride argument under the paper's names, and
fields that read the block input's channels. (tests/test_zoo.py checks the builders against torchvision.)"""

from __future__ import annotations

import pytest
from conftest import SPECS

import archcompiler
from archcompiler import SpecError

V2, V3, V3_SMALL = SPECS / "mobilenet_v2.yaml", SPECS / "mobilenet_v3.yaml", SPECS / "mobilenet_v3_small.yaml"


def _names(spec) -> set[str]:
    return {layer.name for layer in spec.layers}


# ----------------------------------------------------------------------------- the papers' tables

def test_mobilenet_v2_is_table_2_with_its_columns():
    spec = archcompiler.load_spec(V2)
    rows = [f"bottleneck{k}" for k in range(1, 8)]
    assert [spec.instances[r].args["n"] for r in rows] == [1, 2, 3, 4, 3, 3, 1]
    assert [spec.instances[r].args["s"] for r in rows] == [1, 2, 2, 2, 1, 2, 1]
    # the later repeats of a row take stride 1 (the block's stride argument is the paper's s)
    assert spec.layer("bottleneck4/0/dwise").spec.stride == 2
    assert spec.layer("bottleneck4/1/dwise").spec.stride == 1
    names = _names(spec)
    # expansion only where t != 1; residual only where the stride is 1 and the channels stay
    assert "bottleneck1/0/expand" not in names and "bottleneck2/0/expand" in names
    assert "bottleneck2/0/add" not in names and "bottleneck2/1/add" in names
    assert "bottleneck5/0/add" not in names                  # 64 -> 96 channels at stride 1
    assert spec.layer("bottleneck3/0/expand").spec.out == 24 * 6     # in_channels * t
    # every row as Table 2 prints it; the network is 3.50M parameters where Table 4 prints 3.4M
    assert [(d.path, d.severity) for d in archcompiler.check(spec)] == [("network", "warning")]


def test_mobilenet_v2_width_multiplier_rounds_as_torchvision():
    spec = archcompiler.load_spec(V2, overrides={"width_mult": 0.35})
    assert spec.layer("conv1").spec.out == 16               # make_divisible(11.2, 8)
    assert spec.layer("bottleneck2/0/project").spec.out == 8   # make_divisible(8.4, 8)
    assert spec.layer("conv2").spec.out == 1280             # never below 1280
    archcompiler.analyze(spec)


@pytest.mark.parametrize("path, se, plain, squeeze", [
    (V3, ["bneck4", "bneck5", "bneck6", "bneck11", "bneck12", "bneck13", "bneck14", "bneck15"], ["bneck1"], 24),
    (V3_SMALL, ["bneck1", "bneck4", "bneck5", "bneck6", "bneck7", "bneck8", "bneck9", "bneck10", "bneck11"],
     ["bneck1"], 8),
])
def test_mobilenet_v3_rows_have_se_and_expansion_where_the_table_says(path, se, plain, squeeze):
    spec = archcompiler.load_spec(path)
    names = _names(spec)
    rows = [r for r in spec.rows if r.startswith("bneck")]
    assert [r for r in rows if f"{r}/se/scale" in names] == se
    assert [r for r in rows if f"{r}/expand" not in names] == plain
    # SE squeezes to make_divisible(exp // 4, 8); the nonlinearity follows the NL column
    assert spec.layer(f"{se[0]}/se/fc1").spec.out == squeeze       # exp 72 -> 24 (18 rounds up), 16 -> 8
    assert spec.layer("bneck1/dwise").spec.act == "relu"
    assert spec.layer(f"{rows[-1]}/dwise").spec.act == "hardswish"
    assert archcompiler.check(spec) == []


# ----------------------------------------------------------------------------- the language

TABLE = """name: t
input: [3, 16, 16]
blocks:
  unit:
    args: {c: 8, s: 1}
    stride: s
    layers:
      - {name: expand, op: conv, out: "in_channels * 2", kernel: 1}
      - {name: conv, op: conv, out: c, kernel: 3, stride: s, padding: 1}
layers:
  - table:
      use: unit
      repeat: n
      columns: [name, c, n, s]
      rows:
        - [stage1, 8, 2, 2]
"""


def test_a_table_names_its_repeat_column_and_a_block_its_stride_argument():
    spec = archcompiler.load_spec(TABLE)
    assert spec.layer("stage1/0/conv").spec.stride == 2 and spec.layer("stage1/1/conv").spec.stride == 1
    assert spec.instances["stage1"].args == {"c": 8, "s": 2, "n": 2}
    assert spec.layer("stage1/0/expand").spec.out == 6 and spec.layer("stage1/1/expand").spec.out == 16
    assert archcompiler.load_spec(TABLE, overrides={"stage1.n": 3}).instances["stage1"].args["n"] == 3


@pytest.mark.parametrize("change, message", [
    (("repeat: n", "repeat: m"), "repeat names 'm', which is not one of the columns"),
    (("stride: s", "stride: t"), "stride names 't', which is not one of the block's arguments"),
    (('"in_channels * 2"', '"in_chanels * 2"'), "unknown name 'in_chanels'"),
])
def test_mistakes_in_the_new_keys_are_located(change, message):
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(TABLE.replace(*change))
    d = info.value.errors[0]
    assert message in d.message and d.line > 0
