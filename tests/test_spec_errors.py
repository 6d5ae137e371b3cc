"""Every kind of invalid spec gets a located, specific error; all errors of a file at once."""

from __future__ import annotations

import textwrap

import pytest
from conftest import SPECS

from archcompiler import SpecError, load_spec

HEADER = """\
name: t
input: [3, 32, 32]
"""


def errors_of(text: str) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(textwrap.dedent(text))
    return info.value.errors


def one(text: str):
    errs = errors_of(text)
    assert len(errs) == 1, [e.format() for e in errs]
    return errs[0]


def test_unknown_key_suggests_the_right_one():
    typo = one(HEADER + "layers:\n  - {name: c1, op: conv, out: 8, kernal: 3}\n")
    assert typo.message == "unknown key 'kernal'; did you mean 'kernel'?"
    assert (typo.path, typo.line, typo.column) == ("layers.c1.kernal", 4, 34)
    # the 'kernel' it misspells is not also reported missing; a key missing outright still is
    assert one(HEADER + "layers:\n  - {name: c1, op: conv, out: 8, kernel: 3, strid: 2}\n").message.startswith(
        "unknown key 'strid'")
    errs = errors_of(HEADER + "layers:\n  - {name: c1, op: conv, out: 8, colour: 3}\n")
    assert "missing required key 'kernel'" in [e.message for e in errs] and len(errs) == 2


def test_unknown_top_level_key():
    e = errors_of(HEADER + "layrs: []\nlayers:\n  - {name: r, op: relu}\n")
    assert any("unknown key 'layrs'" in d.message and "did you mean 'layers'" in d.message and d.line == 3
               for d in e)


def test_unknown_op_suggests():
    e = one(HEADER + "layers:\n  - {name: c1, op: cnv, out: 8, kernel: 3}\n")
    assert "unknown op 'cnv'" in e.message and "did you mean 'conv'" in (e.hint or "")
    assert (e.line, e.column, e.path) == (4, 20, "layers.c1.op")


def test_wrong_type():
    e = one(HEADER + "layers:\n  - {name: c1, op: conv, out: 8, kernel: 3, bias: maybe}\n")
    assert e.path == "layers.c1.bias" and "valid boolean" in e.message and (e.line, e.column) == (4, 51)


@pytest.mark.parametrize("field, value, words", [
    ("kernel: 0", 4, "greater than or equal to 1"),
    ("out: 0, kernel: 3", 4, "greater than or equal to 1"),
])
def test_conv_values_out_of_range(field, value, words):
    e = one(HEADER + f"layers:\n  - {{name: c1, op: conv, out: 8, {field}}}\n".replace("out: 8, out: 0", "out: 0"))
    assert words in e.message and e.line == value


@pytest.mark.parametrize("p", ["1.0", "-0.1", "1.5"])
def test_dropout_outside_0_1(p):
    e = one(HEADER + f"layers:\n  - {{name: d, op: dropout, p: {p}}}\n")
    assert e.path == "layers.d.p" and (e.line, e.column) == (4, 31)


def test_undefined_reference_suggests():
    e = one(HEADER + "layers:\n  - {name: conv_a, op: conv, out: 8, kernel: 3}\n"
                     "  - {name: r, op: relu, input: conv_b}\n")
    assert "undefined layer 'conv_b'" in e.message and "conv_a" in (e.hint or "")
    assert (e.line, e.column) == (5, 32)


def test_undefined_block():
    e = one(HEADER + "layers:\n  - {name: b1, use: incepton}\n"
                     "blocks:\n  inception: {layers: [{name: r, op: relu}]}\n")
    assert "unknown block 'incepton'" in e.message and "inception" in (e.hint or "") and e.line == 4


def test_duplicate_layer_names():
    e = one(HEADER + "layers:\n  - {name: a, op: relu}\n  - {name: a, op: relu}\n")
    assert "duplicate layer name 'a'" in e.message and "line 4" in e.message and e.line == 5


def test_duplicate_yaml_keys_are_refused():
    e = one(HEADER + "params:\n  width: 1\n  width: 2\nlayers:\n  - {name: a, op: relu}\n")
    assert "duplicate key 'width'" in e.message and (e.line, e.column) == (5, 3)


def test_missing_and_extra_block_arguments():
    text = HEADER + textwrap.dedent("""\
        blocks:
          b: {args: [n, m], layers: [{name: c, op: conv, out: n, kernel: 1}]}
        layers:
          - {name: x, use: b, args: {n: 4, k: 2}}
        """)
    errs = errors_of(text)
    messages = " | ".join(d.message for d in errs)
    assert "no argument 'k'" in messages and "needs argument(s) m" in messages
    extra = next(d for d in errs if "no argument" in d.message)
    assert (extra.line, extra.column) == (6, 36)


def test_table_cells_are_checked_where_they_stand():
    text = HEADER + textwrap.dedent("""\
        blocks:
          b: {args: [width], layers: [{name: c, op: conv, out: width, kernel: 1}]}
        layers:
          - table:
              use: b
              columns: [name, width]
              rows:
                - [ok, 8]
                - [bad, 0]
        """)
    e = one(text)
    assert e.path == "layers.bad.width" and (e.line, e.column) == (11, 17)


def test_recursive_blocks():
    text = HEADER + textwrap.dedent("""\
        blocks:
          a: {layers: [{name: x, use: b}]}
          b: {layers: [{name: y, use: a}]}
        layers:
          - {name: top, use: a}
        """)
    e = one(text)
    assert "uses itself" in e.message and "a -> b -> a" in e.message


def test_unsafe_yaml_tags_are_refused():
    e = one(HEADER + "layers: !!python/object/apply:os.system ['echo hi']\n")
    assert "tag" in e.message and e.line == 3


def test_yaml_syntax_error_is_located():
    e = one(HEADER + "layers:\n  - {name: a, op: relu\n")
    assert "YAML syntax error" in e.message and e.line >= 4


def test_several_errors_at_once():
    text = HEADER + textwrap.dedent("""\
        layers:
          - {name: c1, op: conv, out: 0, kernel: 3}
          - {name: d, op: dropout, p: 2}
          - {name: r, op: relu, input: nowhere}
          - {name: c2, op: conv, out: 8, kernel: 3, stride: -1}
        """)
    errs = errors_of(text)
    assert len(errs) == 4
    assert sorted(d.line for d in errs) == [4, 5, 6, 7]
    assert all(d.file == "<string>" for d in errs)


def test_errors_name_the_file(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text(HEADER + "layers:\n  - {name: c1, op: conv, out: 8, kernel: 0}\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    d = info.value.errors[0]
    assert d.file == str(spec) and d.format().startswith(f"{spec}:4:")


def test_expression_errors_name_the_known_names():
    e = one(HEADER + "params: {n: 8}\nlayers:\n  - {name: c, op: conv, out: m * 2, kernel: 3}\n")
    assert "unknown name 'm'" in e.message and "n" in e.message and e.path == "layers.c.out"


def test_expressions_cannot_reach_python():
    e = one(HEADER + "layers:\n  - {name: c, op: conv, out: \"__import__('os').getpid()\", kernel: 3}\n")
    assert "not allowed" in e.message or "unknown function" in e.message


def test_unquoted_expression_with_comma_gets_a_hint():
    errs = errors_of(HEADER + "params: {w: 1}\nlayers:\n  - {name: c, op: conv, out: round_to(8 * w, 8), kernel: 3}\n")
    assert any("quote the expression" in (d.hint or "") for d in errs)


def test_concat_shape_mismatch_lists_inputs():
    from archcompiler import GraphError, lower
    from archcompiler.passes import infer_shapes

    spec = load_spec(HEADER + textwrap.dedent("""\
        layers:
          - {name: a, op: conv, out: 8, kernel: 3}
          - {name: b, op: conv, out: 8, kernel: 3, padding: 1, input: input}
          - {name: cat, op: concat, inputs: [a, b]}
        """))
    with pytest.raises(GraphError) as info:
        infer_shapes(lower(spec))
    d = info.value.errors[0]
    assert d.message == "b gives 32x32x8, but the other inputs of concat cat are 30x30"
    assert d.line == 5 and d.path == "b" and "kernel, stride and padding" in d.hint


def test_a_branch_of_the_wrong_size_is_reported_in_every_module():
    """A 5x5 branch padded by 1 instead of 2 shrinks the feature map: each inception module says so
    at the 5x5 layer's line, with its size and the size the other branches have."""
    from archcompiler import GraphError, lower
    from archcompiler.passes import infer_shapes

    text = (SPECS / "googlenet.yaml").read_text().replace("kernel: 5, padding: 2", "kernel: 5, padding: 1")
    with pytest.raises(GraphError) as info:
        infer_shapes(lower(load_spec(text)))
    errors = info.value.errors
    assert [d.path for d in errors] == [f"inception_{m}/5x5" for m in
                                        ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "name: 5x5," in t)
    assert all(d.line == line for d in errors)
    assert errors[0].message == "inception_3a/5x5 gives 26x26x32, but the other inputs of concat inception_3a/output are 28x28"


def test_spatial_size_reaching_zero_is_located():
    from archcompiler import GraphError, analyze
    with pytest.raises(GraphError) as info:
        analyze(HEADER + "layers:\n  - {name: big, op: max_pool, kernel: 40}\n")
    assert "too small" in info.value.errors[0].message and info.value.errors[0].line == 4


def test_groups_must_divide_channels():
    from archcompiler import GraphError, analyze
    with pytest.raises(GraphError) as info:
        analyze(HEADER + "layers:\n  - {name: g, op: conv, out: 8, kernel: 3, groups: 2}\n")
    assert "groups=2" in info.value.errors[0].message


def test_a_layer_that_feeds_no_output_is_located():
    from archcompiler import GraphError, analyze
    text = HEADER + textwrap.dedent("""\
        layers:
          - {name: a, op: conv, out: 4, kernel: 3}
          - {name: stray, op: conv, out: 4, kernel: 1, input: input}
          - {name: b, op: relu, input: a}
        outputs:
          main: {layer: b}
        """)
    with pytest.raises(GraphError) as info:
        analyze(text)
    d = info.value.errors[0]
    assert d.message == "layer 'stray' feeds no output" and d.line == 5 and "outputs" in d.hint


GOOGLENET = (SPECS / "googlenet.yaml").read_text().splitlines(keepends=True)


def _googlenet_with(line_start: str, old: str, new: str) -> str:
    """googlenet.yaml with one edit on the first line that starts with ``line_start`` (stripped)."""
    lines = list(GOOGLENET)
    k = next(i for i, line in enumerate(lines) if line.strip().startswith(line_start))
    assert old in lines[k]
    lines[k] = lines[k].replace(old, new, 1)
    return "".join(lines), k + 1


def test_a_misspelt_table_column_is_one_error_at_the_columns_line():
    """Not one error per row, and no 'undefined layer' for the rows the typo made fail."""
    text, line = _googlenet_with("columns: [name, 1x1", "3x3_reduce", "3x3_reduse")
    e = one(text)
    assert e.message == "block 'inception' has no argument '3x3_reduse'" and e.hint == "did you mean '3x3_reduce'?"
    assert e.line == line and e.path == "layers[0].table.columns[2]"


def test_a_table_without_a_column_for_an_argument_says_so_once():
    text, line = _googlenet_with("columns: [name, 1x1", "pool_proj, ", "")
    errs = [e for e in errors_of(text) if "column" in e.message]
    assert len(errs) == 1 and errs[0].line == line and "pool_proj" in errs[0].message


@pytest.mark.parametrize("old, new, message", [
    ("kernel: 5", "kernal: 5", "unknown key 'kernal'; did you mean 'kernel'?"),
    ("op: conv", "op: cnov", "unknown op 'cnov'"),
    ("out: \"round_to(5x5 * width, 8)\"", "out: \"round_to(5x5 * widht, 8)\"", "unknown name 'widht'"),
])
def test_a_mistake_inside_a_block_layer_is_reported_without_its_consequences(old, new, message):
    """The layer that failed is not reported again as an 'undefined layer' where the block reads it."""
    text, line = _googlenet_with("- {name: 5x5, ", old, new)
    e = one(text)
    assert e.message.startswith(message) and e.line == line
