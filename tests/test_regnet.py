"""RegNetX and RegNetY (Radosavovic et al., "Designing Network Design Spaces"), one spec with a column
per model, exact to torchvision's 15 regnet builders: state_dict keys in order with their shapes,
parameter counts, FLOPs, and logits where the reference holds them (tests/data/torchvision_regnet.json,
tests/data/README.md); and the two things the spec needed: a block argument that reads the enclosing
block's input (RegNetY's SE width) and torchvision's hyphenated module names ('block1-0')."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, SPECS, meta_layout

import archcompiler
from archcompiler import SpecError

REGNET = SPECS / "regnet.yaml"
BUILDERS = [f"regnet_x_{m}" for m in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")] + \
           [f"regnet_y_{m}" for m in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")]


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return json.loads((DATA / "torchvision_regnet.json").read_text())["builders"]


def test_every_builder_has_its_reference_and_a_column():
    data = json.loads((DATA / "torchvision_regnet.json").read_text())["builders"]
    assert set(data) == set(BUILDERS)
    spec = archcompiler.load_spec(REGNET)
    assert set(spec.document["builders"]) == set(BUILDERS)
    assert spec.document["variants"]["columns"] == [b.removeprefix("regnet_") for b in BUILDERS]


# ----------------------------------------------------------------------------- the paper's table

def test_stages_follow_the_per_stage_table():
    spec = archcompiler.load_spec("regnet_y_400mf")          # d = [1, 3, 6, 6], w = [48, 104, 208, 440], g = 8
    names = {layer.name for layer in spec.layers}
    assert [sum(f"stage{s}/{k}/add" in names for k in range(20)) for s in range(1, 5)] == [1, 3, 6, 6]
    assert [spec.layer(f"stage{s}/0/b").spec.out for s in range(1, 5)] == [48, 104, 208, 440]
    assert spec.layer("stage3/0/b").spec.groups == 208 // 8 and spec.layer("stage3/0/b").spec.stride == 2
    assert spec.layer("stage3/1/b").spec.stride == 1
    # a projection shortcut only where the shape changes: the first block of each stage
    assert "stage2/0/proj" in names and "stage2/1/proj" not in names
    # SE squeezes to 0.25 x the block's input width: 104 // 4 for stage3's first block, 208 // 4 after it
    assert spec.layer("stage3/0/se/fc1").spec.out == 26 and spec.layer("stage3/1/se/fc1").spec.out == 52
    assert archcompiler.check(spec) == []


def test_regnet_x_has_no_se_and_clamps_the_group_width():
    spec = archcompiler.load_spec(REGNET, overrides={"model": "x_8gf"})   # g = 120, stage 1 only 80 wide
    assert not any("/se/" in layer.name for layer in spec.layers)
    assert spec.layer("stage1/0/b").spec.groups == 1                       # group width min(120, 80)
    assert spec.layer("stage2/0/b").spec.groups == 240 // 120
    assert archcompiler.check(spec) == []


# (tests/test_zoo.py checks every builder's keys, parameters, FLOPs and logits against torchvision's)


# ----------------------------------------------------------------------------- what the spec needed

NESTED = """name: t
input: [3, 8, 8]
blocks:
  inner:
    args: [squeeze]
    layers:
      - {name: fc, op: conv, out: squeeze, kernel: 1}
  outer:
    args: {c: 8}
    layers:
      - {name: conv, op: conv, out: c, kernel: 3, padding: 1}
      - {name: se, use: inner, args: {squeeze: "in_channels // 2"}}
layers:
  - {name: stem, op: conv, out: 6, kernel: 1}
  - {name: b, use: outer, args: {c: 16}}
"""


def test_a_block_used_inside_a_block_reads_the_enclosing_blocks_input():
    spec = archcompiler.load_spec(NESTED)
    assert spec.layer("b/se/fc").spec.out == 3                 # the outer block's input: 6 channels, not 16


def test_outside_a_block_in_channels_is_refused_at_the_argument():
    text = NESTED.replace("  - {name: b, use: outer, args: {c: 16}}",
                          "  - {name: b, use: inner, args: {squeeze: \"in_channels // 2\"}}")
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    d = info.value.errors[0]
    assert len(info.value.errors) == 1          # not also "needs argument(s) squeeze"
    assert "'in_channels' is the shape of a block's input" in d.message and d.line == text.splitlines().index(
        "  - {name: b, use: inner, args: {squeeze: \"in_channels // 2\"}}") + 1


def test_hyphenated_module_names_are_kept_where_a_rename_rule_writes_them():
    from archcompiler.backends.torch.naming import segment

    assert segment("block1-0", renamed=True) == "block1-0" and segment("block12-10", renamed=True) == "block12-10"
    assert segment("a-", renamed=True) == "a_" and segment("-0", renamed=True) == "m_0"
    assert segment("conv-a") == "conv_a"          # a spec's own layer name: an identifier, as before
    pytest.importorskip("torch")
    text = NESTED + "torch:\n  rename:\n    - ['^b/', 'trunk/b-0/']\n"
    keys, _ = meta_layout(text.replace("name: stem,", "name: stem-1,"))
    assert [k for k, _ in keys] == ["stem_1.weight", "stem_1.bias", "trunk.b-0.conv.weight", "trunk.b-0.conv.bias",
                                    "trunk.b-0.se.fc.weight", "trunk.b-0.se.fc.bias"]


# ----------------------------------------------------------------------------- the paper's numbers

def _warnings(found):
    return [(d.message, d.line) for d in found if d.severity == "warning"]


def test_check_reports_where_torchvision_departs_from_the_authors_numbers():
    """claims: the whole network's params and multiply-adds, one per model; torchvision's
    regnet_x_400mf rounds its last stage to 400 channels where the authors' code has 384."""
    text = REGNET.read_text().splitlines()
    params_line = next(n for n, line in enumerate(text, 1) if line.strip().startswith("params: [   5.2M"))
    found = archcompiler.check(archcompiler.load_spec("regnet_x_400mf"))
    assert _warnings(found) == [("params: the paper says 5.2M (5,200,000 parameters), the spec computes "
                                 "5,495,976 (5.496M), 5.7% off", params_line)]
    assert archcompiler.check(archcompiler.load_spec("regnet_y_400mf")) == []
    found = archcompiler.check(archcompiler.load_spec("regnet_y_8gf"))
    assert [line for _, line in _warnings(found)] == [params_line + 1]          # its ops, on the ops row
    assert archcompiler.load_spec("regnet_y_128gf").claims is None              # not in the paper


def test_network_claims_are_checked_and_located():
    text = NESTED.replace("input: [3, 8, 8]", """input: [3, 8, 8]
params: {v: a}
variants:
  by: v
  columns: [a, b]
  rows: {c1: [16, 8]}
claims: {params: [2K, null]}""").replace("args: {c: 16}", "args: {c: c1}")
    found = archcompiler.check(archcompiler.load_spec(text))
    assert len(found) == 1 and "the paper says 2K" in found[0].message and found[0].line == 8
    assert archcompiler.load_spec(text, overrides={"v": "b"}).claims is None     # null: not printed


@pytest.mark.parametrize("claims, message", [
    ("{params: [1K]}", "claims.params has 1 values but the variants have 2 columns"),
    ("{params: [1K, 2Q]}", "is not a quantity"),
    ("{depth: [1, 2]}", "depth"),
])
def test_mistakes_in_network_claims_are_located(claims, message):
    text = NESTED.replace("input: [3, 8, 8]", f"""input: [3, 8, 8]
params: {{v: a}}
variants:
  by: v
  columns: [a, b]
  rows: {{c1: [16, 8]}}
claims: {claims}""").replace("args: {c: 16}", "args: {c: c1}")
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    d = info.value.errors[0]
    claims_line = next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith("claims:"))
    assert message in d.message and d.line == claims_line, (d.line, d.message)


def test_a_variant_drops_the_network_claims_unless_it_keeps_them(tmp_path):
    (tmp_path / "regnet.yaml").write_text(REGNET.read_text())
    (tmp_path / "mine.yaml").write_text("extends: regnet.yaml\nname: mine\n")
    assert archcompiler.load_spec(tmp_path / "mine.yaml").claims is None
    (tmp_path / "mine.yaml").write_text("extends: regnet.yaml\nname: mine\nkeep_claims: true\n")
    assert archcompiler.load_spec(tmp_path / "mine.yaml").claims.params == "4.3M"
