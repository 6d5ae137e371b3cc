"""ShuffleNetV2 (Table 5, widths 0.5x to 2x) and MnasNet (torchvision's B1 stacks, alpha 0.5 to 1.3),
each one spec of torchvision's shufflenet_v2_x0_5 .. x2_0 and mnasnet0_5 .. 1_3 (tests/test_zoo.py
checks keys, parameters, FLOPs and logits against torchvision's, tests/data/torchvision_shuffle_mnas.json)."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, SPECS

import archcompiler

SHUFFLE = {f"shufflenet_v2_x{w.replace('.', '_')}": float(w) for w in ("0.5", "1.0", "1.5", "2.0")}
MNAS = {"mnasnet0_5": 0.5, "mnasnet0_75": 0.75, "mnasnet1_0": 1.0, "mnasnet1_3": 1.3}
BUILDERS = sorted([*SHUFFLE, *MNAS])


@pytest.fixture(scope="module")
def reference() -> dict[str, dict]:
    return json.loads((DATA / "torchvision_shuffle_mnas.json").read_text())["builders"]


def test_every_builder_has_its_reference(reference):
    assert set(reference) == set(BUILDERS)
    from archcompiler.spec import zoo

    assert {b: zoo.find(b).file.name for b in BUILDERS} == {
        **{b: "shufflenet_v2.yaml" for b in SHUFFLE}, **{b: "mnasnet.yaml" for b in MNAS}}


# ----------------------------------------------------------------------------- ShuffleNetV2's Table 5

def test_shufflenet_v2_is_table_5():
    spec = archcompiler.load_spec("shufflenet_v2_x1_0")
    assert [spec.instances[r].args["repeat"] for r in ("stage2", "stage3", "stage4")] == [4, 8, 4]
    names = {layer.name for layer in spec.layers}
    # the first unit of a stage downsamples in both branches (Figure 3(d)); the others split (3(c))
    assert {"stage2/0/branch1_dw", "stage2/0/branch1"} <= names and "stage2/0/left" not in names
    assert {"stage2/1/left", "stage2/1/right"} <= names and "stage2/1/branch1" not in names
    assert spec.layer("stage2/0/branch2_dw").spec.stride == 2 and spec.layer("stage2/1/branch2_dw").spec.stride == 1
    report = archcompiler.analyze(spec)
    out = {r["name"]: tuple(r["output"]) for r in report["rows"]}
    assert out["conv1"] == (24, 112, 112) and out["maxpool"] == (24, 56, 56)
    assert (out["stage2"], out["stage3"], out["stage4"]) == ((116, 28, 28), (232, 14, 14), (464, 7, 7))
    assert out["conv5"] == (1024, 7, 7)
    assert archcompiler.check(spec) == []


@pytest.mark.parametrize("builder, channels, mflops, mparams", [
    ("shufflenet_v2_x0_5", (48, 96, 192, 1024), 41, 1.4),
    ("shufflenet_v2_x1_0", (116, 232, 464, 1024), 146, 2.3),
    ("shufflenet_v2_x1_5", (176, 352, 704, 1024), 299, 3.5),
    ("shufflenet_v2_x2_0", (244, 488, 976, 2048), 591, 7.4),
])
def test_shufflenet_v2_columns_are_the_papers(builder, channels, mflops, mparams):
    """Table 5's output channels exactly; its FLOPs (multiply-adds) and weights as the paper rounds
    them, within 2% (torchvision's 2x counts 583M multiply-adds where the paper prints 591M)."""
    report = archcompiler.analyze(builder)
    out = {r["name"]: r["output"][0] for r in report["rows"]}
    assert (out["stage2"], out["stage3"], out["stage4"], out["conv5"]) == channels
    assert abs(report["total"]["macs"] / 1e6 - mflops) <= 0.02 * mflops
    assert round(report["total"]["params"] / 1e6, 1) == mparams


def test_a_stride_1_unit_refuses_an_odd_channel_count_at_the_split():
    """Said at the split (whose shape the later blocks' in_channels need), not where they need it."""
    from archcompiler import SpecError

    with pytest.raises(SpecError) as info:
        archcompiler.analyze("shufflenet_v2_x1_0", overrides={"conv1.out": 25, "stage2.stride": 1})
    problem = info.value.errors[0]
    assert "needs an even number of them, got 56x56x25" in problem.message
    assert problem.path == "stage2/0/right" and problem.line > 0 and len(info.value.errors) == 1


# ----------------------------------------------------------------------------- MnasNet

def test_mnasnet_rounds_channels_as_torchvision():
    """_round_to_multiple_of(c * alpha, 8, round_up_bias=0.9): 0.75 x 40 = 30 rounds up to 32,
    1.3 x 32 = 41.6 down to 40, 0.5 x 16 = 8."""
    def channels(builder):
        spec = archcompiler.load_spec(builder)
        return [spec.layer(n).spec.out for n in ("conv1", "sepconv_pw", "stack1/0/project", "stack2/0/project",
                                                 "stack3/0/project", "stack4/0/project", "stack5/0/project",
                                                 "stack6/0/project")]
    assert channels("mnasnet1_0") == [32, 16, 24, 40, 80, 96, 192, 320]
    assert channels("mnasnet0_5") == [16, 8, 16, 24, 40, 48, 96, 160]
    assert channels("mnasnet0_75") == [24, 16, 24, 32, 64, 72, 144, 240]
    assert channels("mnasnet1_3") == [40, 24, 32, 56, 104, 128, 248, 416]


def test_mnasnet_stacks_repeat_with_a_residual_where_the_shape_stays():
    spec = archcompiler.load_spec("mnasnet1_0")
    assert [spec.instances[f"stack{i}"].args["n"] for i in range(1, 7)] == [3, 3, 3, 2, 4, 1]
    names = {layer.name for layer in spec.layers}
    assert "stack1/0/add" not in names and "stack1/1/add" in names
    assert "stack4/0/add" not in names and "stack6/0/add" not in names     # 80 -> 96, 192 -> 320 at stride 1
    assert spec.layer("stack2/0/dwise").spec.kernel == 5 and spec.layer("stack2/0/dwise").spec.stride == 2
    assert spec.layer("stack1/0/expand").spec.norm_spec().momentum == 1 - 0.9997
    assert archcompiler.check(spec) == []


# ----------------------------------------------------------------------------- claims from a table of variants

@pytest.mark.parametrize("builder", sorted(SHUFFLE))
def test_each_width_checks_its_own_column_of_table_5(builder):
    """A claim cell may name a variant row: stage2's output claim is 28x28x48 at 0.5x, 28x28x244 at 2x."""
    spec = archcompiler.load_spec(builder)
    width = SHUFFLE[builder]
    channels = {0.5: 48, 1.0: 116, 1.5: 176, 2.0: 244}[width]
    assert spec.instances["stage2"].claims.output == f"28x28x{channels}"
    assert archcompiler.check(spec) == []


def test_a_departure_from_the_column_is_reported_at_its_row():
    problems = archcompiler.check(archcompiler.load_spec("shufflenet_v2_x2_0", overrides={"stage3.out": 500}))
    (problem,) = problems
    assert "the paper says 14x14x488, the spec computes 14x14x500" in problem.message
    assert problem.path.startswith("stage3") and problem.line > 0


def test_a_claim_naming_no_parameter_is_refused_as_before():
    from archcompiler import SpecError

    original = (SPECS / "shufflenet_v2.yaml").read_text()
    text = original.replace("claims: {output: conv5_out}", "claims: {output: conv5_outt}")
    assert text != original
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec(text)
    assert "'conv5_outt' is not an output size" in info.value.errors[0].message
