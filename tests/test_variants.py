"""Variants: --set overrides, extends with edits, resolve with origins, diff, and the shipped
variant and classic specs."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
from conftest import SPECS, run_archc

import archcompiler
from archcompiler import SpecError, analyze, load_spec

PAPER = SPECS / "googlenet.yaml"


# ----------------------------------------------------------------------------- overrides


def test_override_a_parameter_reaches_every_head():
    spec = load_spec(PAPER, {"num_classes": 2})
    assert spec.layer("fc").spec.out == 2
    assert spec.layer("aux1/fc2").spec.out == 2 and spec.layer("aux2/fc2").spec.out == 2


def test_override_a_table_cell():
    base = analyze(PAPER)
    changed = analyze(PAPER, ["inception_4b.5x5=96"])
    rows = {r["name"]: r for r in changed["rows"]}
    assert rows["inception_4b"]["columns"]["5x5"] == 96
    assert rows["inception_4b"]["output"] == [544, 14, 14]
    # the wider 5x5 conv, and 32 more input channels for inception_4c's four input convolutions
    wider = (96 - 64) * 24 * 25 + (96 - 64)
    assert changed["total"]["params"] - base["total"]["params"] == wider + 32 * (128 + 128 + 24 + 64)


def test_override_a_layer_field_and_a_key_path():
    spec = load_spec(PAPER, ["conv1.out=32", "outputs.main.loss=binary_cross_entropy", "params.dropout=0.5"])
    assert spec.layer("conv1").spec.out == 32
    assert spec.outputs["main"].loss == "binary_cross_entropy"
    assert spec.layer("dropout").spec.p == 0.5


def test_override_values_are_validated_and_located():
    with pytest.raises(SpecError) as info:
        load_spec(PAPER, ["dropout=1.5"])
    d = info.value.errors[0]
    assert d.file == "--set dropout=1.5" and "less than 1" in d.message
    with pytest.raises(SpecError) as info:
        load_spec(PAPER, ["inception_4b.5x6=96"])
    assert "no column '5x6'" in info.value.errors[0].message and "5x5" in info.value.errors[0].hint
    with pytest.raises(SpecError) as info:
        load_spec(PAPER, ["nothing"])
    assert "PATH=VALUE" in info.value.errors[0].message


def test_width_multiplier_rounds_to_multiples_of_8():
    spec = load_spec(PAPER, {"width": 0.5})
    assert spec.layer("inception_3a/3x3").spec.out == 64            # 128 x 0.5
    assert spec.layer("inception_4a/3x3").spec.out == 104           # 208 x 0.5
    assert spec.layer("inception_3a/5x5_reduce").spec.out == 8      # 16 x 0.5
    assert all(layer.spec.out % 8 == 0 for layer in spec.layers if layer.op == "conv")
    assert analyze(PAPER, {"width": 0.5})["total"]["params"] < analyze(PAPER)["total"]["params"] / 3


# ----------------------------------------------------------------------------- extends


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
    name: base
    input: [3, 16, 16]
    params: {n: 8, k: 3}
    blocks:
      pair: {args: [c], layers: [{name: a, op: conv, out: c, kernel: 3, padding: 1}, {name: b, op: relu}]}
    layers:
      - {name: c1, op: conv, out: n, kernel: k, padding: 1, claims: {output: 16x16x8}}
      - {name: r1, op: relu}
      - {name: p1, use: pair, args: {c: 4}}
      - {name: fc, op: linear, out: 10}
    """


def test_extends_merges_maps_and_replaces_lists(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        name: child
        params: {n: 16}
        input: [3, 32, 32]
        """)
    spec = load_spec(child)
    assert spec.name == "child" and spec.params == {"n": 16, "k": 3}
    assert spec.input == (3, 32, 32) and spec.layer("c1").spec.out == 16
    assert spec.row_claims("c1") is None        # claims describe the parent's paper


def test_delete_key_insert_and_delete_layers(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        name: child
        params: {_delete: [k], k2: 5}
        edits:
          - {layer: c1, set: {kernel: k2, padding: 2}}
          - {delete: r1}
          - {insert_after: c1, layers: [{name: bn, op: batch_norm}]}
          - {insert_before: fc, layers: [{name: drop, op: dropout, p: 0.1}]}
          - {block: pair, layer: a, set: {kernel: 1, padding: 0}}
          - {replace: p1, layers: [{name: p1, op: max_pool, kernel: 2}]}
        """)
    spec = load_spec(child)
    assert "k" not in spec.params
    assert [layer.name for layer in spec.layers] == ["c1", "bn", "p1", "drop", "fc"]
    assert spec.layer("c1").spec.kernel == 5


def test_edit_of_a_block(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        name: child
        edits:
          - {block: pair, layer: a, set: {kernel: 1, padding: 0}}
        """)
    assert load_spec(child).layer("p1/a").spec.kernel == 1


def test_bad_edit_targets_are_located(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        name: child
        edits:
          - {delete: r2}
          - {block: pear, layer: a, set: {kernel: 1}}
        """)
    with pytest.raises(SpecError) as info:
        load_spec(child)
    first, second = info.value.errors
    assert "no layer 'r2'" in first.message and "r1" in first.hint and first.line == 4
    assert "no block 'pear'" in second.message and "pair" in second.hint and second.line == 5


def test_missing_parent_and_cycles_are_located_errors(tmp_path):
    missing = write(tmp_path, "m.yaml", "extends: nowhere.yaml\nname: m\n")
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert "missing file: nowhere.yaml" in info.value.errors[0].message and info.value.errors[0].line == 1
    write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    b = write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\n")
    with pytest.raises(SpecError) as info:
        load_spec(b)
    assert "cycle" in info.value.errors[0].message
    result = run_archc("validate", str(b))
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_resolve_prints_origins(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nparams: {n: 16}\n")
    result = run_archc("resolve", str(child), "--set", "k=5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(li.strip().startswith("n: 16") and f"{child}:3:" in li for li in lines)
    assert any(li.strip().startswith("k: 5") and "--set k=5" in li for li in lines)
    assert any("c1" in li and "base.yaml:7:" in li for li in lines)
    data = json.loads(run_archc("resolve", str(child), "--format", "json").stdout)
    assert data["origins"]["params.n"].startswith(str(child))
    # what resolve prints is itself a valid spec
    plain = run_archc("resolve", str(child), "--no-origins").stdout
    assert load_spec(plain).layer("c1").spec.out == 16


# ----------------------------------------------------------------------------- diff


def test_diff_against_an_override():
    result = archcompiler.diff(PAPER, PAPER, overrides_b={"num_classes": 2})
    changed = {r["name"]: r for r in result["rows"] if r["status"] != "same"}
    assert set(changed) == {"aux1", "aux2", "fc", "prob"}
    assert changed["fc"]["changes"] == {"out": [1000, 2]}
    assert changed["fc"]["params"]["delta"] == 2 * 1024 + 2 - 1_025_000
    assert result["total"]["params"]["delta"] == changed["fc"]["params"]["delta"]


def test_diff_paper_vs_torchvision_cli():
    result = run_archc("diff", str(PAPER), str(SPECS / "googlenet-torchvision.yaml"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "norm1" in out and "removed" in out
    assert "kernel: 5 -> 3  [5x5]" in out and "norm: none -> batch_norm(eps=0.001, momentum=0.1)" in out
    assert "params: 6,998,552 -> 6,624,904" in out
    md = run_archc("diff", str(PAPER), str(PAPER), "--set-b", "inception_4b.5x5=96", "--format", "markdown")
    row = next(li for li in md.stdout.splitlines() if li.startswith("| inception_4b | changed |"))
    assert "#5x5: 64 -> 96" in row and "14x14x544" in row
    assert "input: 14x14x512 -> 14x14x544" in md.stdout
    js = json.loads(run_archc("diff", str(PAPER), str(PAPER), "--format", "json").stdout)
    assert all(r["status"] == "same" for r in js["rows"])


# ----------------------------------------------------------------------------- shipped variants


def test_two_class_variant():
    spec = load_spec(SPECS / "googlenet-2class.yaml")
    assert spec.params["num_classes"] == 2
    assert {o.loss for o in spec.outputs.values()} == {"binary_cross_entropy"}
    assert spec.outputs["aux1"].weight == 0.3 and spec.outputs["aux1"].training_only
    assert analyze(spec)["rows"][-1]["output"] == [2]


def test_inception_v2_style_variant_replaces_5x5_by_two_3x3():
    spec = load_spec(SPECS / "googlenet-v2.yaml")
    assert spec.layer("inception_3a/5x5a").spec.kernel == 3 and spec.layer("inception_3a/5x5").spec.kernel == 3
    assert spec.layer("inception_3a/5x5").inputs == ("inception_3a/5x5a",)
    assert all(layer.spec.norm_spec() is not None for layer in spec.layers if layer.op == "conv")
    assert not [layer for layer in spec.layers if layer.op == "lrn"]


def test_small_variant_is_small():
    report = analyze(SPECS / "googlenet-small.yaml")
    assert report["input"] == [3, 64, 64] and report["rows"][-1]["output"] == [10]
    assert report["total"]["params"] < 500_000 and report["total"]["macs"] < 50_000_000


def test_vgg16_parameters():
    assert analyze(SPECS / "vgg16.yaml")["total"]["params"] == 138_357_544


def test_resnet18_parameters():
    report = analyze(SPECS / "resnet18.yaml")
    assert report["total"]["params"] == 11_689_512
    assert {r["name"]: r["output"] for r in report["rows"]}["layer4_1"] == [512, 7, 7]


@pytest.mark.parametrize("name", ["vgg16.yaml", "resnet18.yaml", "googlenet-small.yaml", "googlenet-v2.yaml",
                                  "googlenet-2class.yaml"])
def test_variants_validate_and_check(name):
    for command in ("validate", "check"):
        result = run_archc(command, str(SPECS / name))
        assert result.returncode == 0, result.stdout + result.stderr


def test_resolve_prints_one_line_per_table_row():
    result = run_archc("resolve", str(SPECS / "googlenet-small.yaml"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(li) for li in lines) < 200
    row = next(li for li in lines if li.strip().startswith("- [inception_4b,"))
    assert row.strip().startswith("- [inception_4b, 160, 112, 224, 24, 64, 64]")     # the paper's numbers
    assert re.search(r"googlenet\.yaml:83:\d+$", row)                                 # and where they stand
