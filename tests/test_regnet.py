"""RegNetX and RegNetY (Radosavovic et al., "Designing Network Design Spaces"), one spec with a column
per model, exact to torchvision's 15 regnet builders: state_dict keys in order with their shapes,
parameter counts, FLOPs, and logits where the reference holds them (tests/data/torchvision_regnet.json,
tests/data/README.md); and the two things the spec needed: a block argument that reads the enclosing
block's input (RegNetY's SE width) and torchvision's hyphenated module names ('block1-0')."""

from __future__ import annotations

import pytest

import archcompiler
from archcompiler import SpecError

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


def test_outside_a_block_in_channels_is_an_unknown_name_located():
    text = NESTED.replace("  - {name: b, use: outer, args: {c: 16}}",
                          "  - {name: b, use: inner, args: {squeeze: \"in_channels // 2\"}}")
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    d = info.value.errors[0]
    assert "unknown name 'in_channels'" in d.message and d.line == text.splitlines().index(
        "  - {name: b, use: inner, args: {squeeze: \"in_channels // 2\"}}") + 1


def test_hyphenated_module_names_are_kept_as_torchvision_writes_them():
    from archcompiler.backends.torch.naming import segment

    assert segment("block1-0") == "block1-0" and segment("block12-10") == "block12-10"
    assert segment("a-") == "a_" and segment("-0") == "m_0" and segment("a b") == "a_b"
