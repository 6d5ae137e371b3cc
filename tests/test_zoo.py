"""Every torchvision builder archc ships, reached by its name (``archc flops resnet101``,
``archcompiler.build("vgg19_bn")``) and checked against torchvision's recorded facts
(``tests/data/torchvision_*.json``, one file per family, see tests/data/README.md): parameters and
FLOPs, ``state_dict`` keys in order with their shapes (built on the meta device), and, where the
reference holds them, the logits under the recipe weights. The quick tier checks the first builder
of each family; the whole suite checks them all."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import pytest
from conftest import DATA, ROOT, assert_memory_measured, assert_onnx_matches, meta_layout, recipe_input, recipe_weights

import archcompiler
from archcompiler import SpecError
from archcompiler.spec import zoo

FAMILIES = {path.stem.removeprefix("torchvision_"): json.loads(path.read_text())["builders"]
            for path in sorted(DATA.glob("torchvision_*.json")) if path.stem != "torchvision_recipe_logits"}
REFERENCE = {name: ref for family in FAMILIES.values() for name, ref in family.items()}
FIRST = {next(iter(family)) for family in FAMILIES.values()}


def _digest(keys: list) -> str:
    """The SHA-256 of a key list as compact JSON (how tests/data keeps long lists)."""
    return hashlib.sha256(json.dumps(keys, separators=(",", ":")).encode()).hexdigest()


def _tiered(names):
    return [n if n in FIRST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(names)]


@pytest.mark.parametrize("builder", _tiered(REFERENCE))
def test_params_and_flops_equal_torchvision(builder):
    ref = REFERENCE[builder]
    report = archcompiler.analyze(builder)
    assert report["spec"] == builder and report["input"] == ref["input"]
    # torchvision counts the training-only heads' parameters (inception_v3's AuxLogits); its FLOPs are
    # counted in evaluation, without them. A network with attention is held to flops_with_attention: the
    # counter's figure plus the QK^T and AV products it does not see (README, "FLOPs of attention")
    total = report["total"]
    flops = ref.get("flops_with_attention", ref["flops"])
    assert (total["with_training_heads"]["params"], total["flops"]) == (ref["params"], flops)


@pytest.mark.parametrize("builder", _tiered(b for b, ref in REFERENCE.items() if "keys" in ref or "keys_count" in ref))
def test_state_dict_keys_in_torchvisions_order(builder):
    ref = REFERENCE[builder]
    keys, params = meta_layout(builder)
    if "keys" in ref:
        assert keys == ref["keys"]
    else:       # long lists are kept as their count and a digest (tests/data/README.md)
        assert len(keys) == ref["keys_count"]
        assert _digest(keys) == ref["keys_sha256"]
    assert params == ref["params"]


@pytest.mark.slow
@pytest.mark.parametrize("builder", sorted(b for b, ref in REFERENCE.items() if "logits" in ref))
def test_logits_equal_torchvision(builder):
    torch = pytest.importorskip("torch")
    ref = REFERENCE[builder]
    keys = ref.get("keys") or meta_layout(builder)[0]      # a digest only: the spec's keys, checked above
    assert _digest(keys) == _digest(ref["keys"]) if "keys" in ref else ref["keys_sha256"]
    # integer buffers (Swin's relative_position_index) keep the values archc builds: equal to
    # torchvision's (tests/test_swin.py checks their digests)
    keep = archcompiler.build(builder, seed=0).state_dict() if ref.get("int_buffers_sha256") else None
    model = archcompiler.build(builder, weights=recipe_weights(keys, keep))
    with torch.no_grad():
        logits = model.eval()(recipe_input(tuple(ref["input"])))      # its native size
    expected = torch.tensor(ref["logits"])
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


# ----------------------------------------------------------------------------- names

def test_every_reference_builder_is_a_name_and_every_name_has_a_reference():
    assert set(REFERENCE) <= set(zoo.builders())
    assert set(zoo.builders()) <= set(REFERENCE) | {"googlenet"}     # googlenet's facts: torchvision_recipe_logits


def test_a_name_takes_overrides_like_a_file():
    spec = archcompiler.load_spec("resnet101", overrides={"num_classes": 2})
    assert spec.name == "resnet101" and spec.params["depth"] == 101 and spec.params["num_classes"] == 2
    assert archcompiler.load_spec("resnet101", overrides={"depth": 50}).params["depth"] == 50   # the user's last


def test_a_shipped_spec_file_is_a_name_too():
    assert archcompiler.load_spec("googlenet-small").name == "googlenet-small"
    assert archcompiler.load_spec("googlenet").name == "googlenet"      # the builder: torchvision's layout
    assert zoo.find("googlenet").file.name == "googlenet-torchvision.yaml"


def test_an_unknown_name_suggests_the_closest():
    with pytest.raises(SpecError) as info:
        archcompiler.load_spec("resnet10")
    (problem,) = info.value.errors
    assert "resnet10" in problem.message and "did you mean 'resnet101'" in problem.hint
    assert "archc zoo" in problem.hint


def test_a_file_of_the_same_name_wins(tmp_path, monkeypatch):
    (tmp_path / "resnet50").write_text("name: mine\ninput: [3, 8, 8]\nlayers:\n  - {name: c, op: conv, out: 2, "
                                       "kernel: 1}\n")
    monkeypatch.chdir(tmp_path)
    assert archcompiler.load_spec("resnet50").name == "mine"


def test_zoo_lists_names_with_their_facts():
    entries = archcompiler.zoo("resnet1")
    names = [e["name"] for e in entries]
    assert names == ["deeplabv3_resnet101", "fcn_resnet101", "resnet18", "resnet101", "resnet152", "wide_resnet101_2"]
    first = entries[2]
    assert first == {"name": "resnet18", "spec": "specs/resnet.yaml", "sets": {"depth": 18}, "input": [3, 224, 224],
                     "params": REFERENCE["resnet18"]["params"], "macs": REFERENCE["resnet18"]["flops"] // 2}


def test_flops_by_name_never_imports_torch():
    code = ("import sys\nfrom archcompiler.cli import main\nassert main(['flops', 'resnet101']) == 0\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "44,549,160 params" in done.stdout      # resnet101's


@pytest.mark.slow
def test_a_wheel_carries_the_specs(tmp_path):
    """A pip install has the zoo: the specs are package data."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("archcompiler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"archcompiler/specs/{p.name}" for p in zoo.spec_files()}
    assert shipped and shipped <= names


def test_the_builders_index_reads_what_a_full_parse_reads():
    import yaml

    full = {}
    for path in zoo.spec_files():
        for name, sets in (yaml.safe_load(path.read_text()).get("builders") or {}).items():
            sets = dict(sets or {})
            full.setdefault(name, (path, sets, sets.pop("claims", None)))
    assert {n: (b.file, b.sets, b.claims) for n, b in zoo.builders().items()} == full


def test_diff_of_resnet50_and_resnext50_reads_as_what_differs(capsys):
    """The two differ in two parameters; archc diff says so first, then, per row, the widths and the
    grouped 3x3 convolutions of every block once, with each row's params and MACs."""
    from archcompiler.cli import main

    assert main(["diff", "resnet50", "resnext50_32x4d"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["A: resnet50 (specs/resnet.yaml)", "B: resnext50_32x4d (specs/resnet.yaml)",
                       "spec params: groups 1 -> 32, width_per_group 64 -> 4"]
    assert "    groups: 1 -> 32  [conv2 of blocks 0-5]" in out and "    out: 256 -> 512  [conv1, conv2 of blocks 0-5]" in out
    changed = [line.split()[0] for line in out if " changed " in line]
    assert changed == ["conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert "params: 25,557,032 -> 25,028,904 (-528K, 25.6M -> 25M)" in out


# ----------------------------------------------------------------------------- everything else works on them
# One small variant per family of the zoo's later papers (the first specs are measured at full size by the
# tests over MEASURED_SPECS): inference and training memory against torch's live tensors, the built
# module against the analysis (params, FLOPs under FlopCounterMode), --optimize against the ordinary module.
MEASURED = {
    "inception_v3": ["num_classes=10"],       # its auxiliary head needs the full 299x299
    "efficientnet_b0": ["input=[3,64,64]", "num_classes=10"],
    "shufflenet_v2_x0_5": ["input=[3,64,64]", "num_classes=10"],
    "mnasnet0_5": ["input=[3,64,64]", "num_classes=10"],
    "regnet_y_400mf": ["input=[3,64,64]", "num_classes=10"],
    "convnext_tiny": ["input=[3,64,64]", "num_classes=10"],
    "vit_b_16": ["input=[3,64,64]", "num_classes=10", "depth=2"],
    "swin_t": ["input=[3,64,64]", "num_classes=10", "dim=64", "heads=2"],     # 16x16 .. 2x2 maps, padded to the window
    "swin_v2_t": ["input=[3,64,64]", "num_classes=10", "dim=64", "heads=2"],
    "maxvit_t": ["input=[3,64,64]", "window=2", "num_classes=10", "stem=16", "C1=32", "C2=64", "C3=64",
                 "C4=128"],                                     # 16x16 .. 2x2 maps: the partition must tile them
}


def _small(builder):
    return archcompiler.load_spec(builder, overrides=MEASURED[builder])


@pytest.mark.slow
@pytest.mark.parametrize("builder", sorted(MEASURED))
def test_memory_of_a_small_variant_matches_a_measurement(builder):
    pytest.importorskip("torch")
    assert_memory_measured(_small(builder), infer_batch=2, train_batch=2, optimizer="adam")


@pytest.mark.slow
@pytest.mark.parametrize("builder", sorted(MEASURED))
def test_a_small_variant_built_and_optimized_agrees_with_the_analysis(builder):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    spec = _small(builder)
    report = archcompiler.analyze(spec)
    model = archcompiler.build(spec, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):           # running statistics as a trained model has them
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == report["total"]["with_training_heads"]["params"]
    x = torch.randn(2, *spec.input)
    # autograd on and the math attention backend: the counter then sees attention's products too
    # (under no_grad nn.MultiheadAttention's fused path hides it whole)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    # one image, as the reference counts (Swin V2's position-bias MLP runs once per forward, whatever the batch)
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x[:1])
    assert counter.get_total_flops() == report["total"]["flops"]
    with torch.no_grad():
        expected = model(x)
    fast = archcompiler.build(spec, weights=model.state_dict(), optimize=True)
    with torch.no_grad():
        got = fast(x)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_every_torchvision_cnn_builder_is_a_name():
    """The issue's list: every torchvision classification CNN; and the Vision Transformers, Swin and MaxViT (issue 23)."""
    cnns = ("alexnet vgg11 vgg11_bn vgg13 vgg13_bn vgg16 vgg16_bn vgg19 vgg19_bn resnet18 resnet34 resnet50 resnet101 "
            "resnet152 resnext50_32x4d resnext101_32x8d resnext101_64x4d wide_resnet50_2 wide_resnet101_2 densenet121 "
            "densenet161 densenet169 densenet201 squeezenet1_0 squeezenet1_1 inception_v3 googlenet mobilenet_v2 "
            "mobilenet_v3_large mobilenet_v3_small efficientnet_v2_s efficientnet_v2_m efficientnet_v2_l mnasnet0_5 "
            "mnasnet0_75 mnasnet1_0 mnasnet1_3 shufflenet_v2_x0_5 shufflenet_v2_x1_0 shufflenet_v2_x1_5 "
            "shufflenet_v2_x2_0 regnet_y_128gf convnext_tiny convnext_small convnext_base convnext_large").split()
    cnns += [f"efficientnet_b{k}" for k in range(8)]
    cnns += [f"regnet_{xy}_{size}" for xy in "xy" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")]
    transformers = ("vit_b_16 vit_b_32 vit_l_16 vit_l_32 vit_h_14 swin_t swin_s swin_b swin_v2_t swin_v2_s "
                    "swin_v2_b maxvit_t").split()
    segmentation = ("fcn_resnet50 fcn_resnet101 deeplabv3_resnet50 deeplabv3_resnet101 deeplabv3_mobilenet_v3_large "
                    "lraspp_mobilenet_v3_large").split()         # issue 34
    video = "r3d_18 mc3_18 r2plus1d_18 s3d".split()             # issue 34 (tests/test_video.py, test_s3d.py)
    assert sorted(zoo.builders()) == sorted(cnns + transformers + segmentation + video)


# Where torchvision departs from the papers' own numbers, by more than check's 2%: each a warning at the claim
# (GoogLeNet's rows: torchvision's variant of the network; the others: whole-network claims)
DEPARTURES = {
    "googlenet": {f"{row}: {q}" for row in ["conv1", *(f"inception_{m}" for m in
                                                       ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"))]
                  for q in ("ops", "params")},
    "squeezenet1_1": {"conv1: params", "fire2: params"},        # 1.1 is not the paper's Table 1
    "resnet50": {"network: ops"}, "resnet101": {"network: ops"},   # ResNet v1.5: the stride in the 3x3
    "efficientnet_b2": {"network: ops"},                          # read at 288, the paper's 260
    "efficientnet_b4": {"network: ops"}, "efficientnet_b5": {"network: ops"}, "efficientnet_b7": {"network: ops"},
    "mobilenet_v2": {"network: params"},                          # 3.50M, printed 3.4M
    "regnet_x_400mf": {"network: params"}, "regnet_y_800mf": {"network: params"}, "regnet_y_8gf": {"network: ops"},
    "convnext_tiny": {"network: params"},                         # 28.59M, printed 28M
    "vit_b_32": {"network: params"},                              # Table 1's 86M: ViT-Base, patch 16's embedding
}


@pytest.mark.slow
def test_check_reports_where_torchvision_departs_from_the_papers():
    found = {}
    for name in zoo.builders():
        diagnostics = archcompiler.check(archcompiler.load_spec(name))
        assert all(d.severity == "warning" for d in diagnostics), name
        if diagnostics:
            found[name] = {f"{d.path}: {d.message.split(':')[0]}" for d in diagnostics}
    assert found == DEPARTURES


def test_a_builder_may_claim_its_own_papers_numbers():
    """ResNeXt-50 is built by the ResNet spec but claims the ResNeXt paper's numbers, not ResNet-50's."""
    assert archcompiler.load_spec("resnext50_32x4d").claims.ops == "4.2G"
    assert archcompiler.load_spec("resnet50").claims.ops == "3.8G"
    assert archcompiler.load_spec("wide_resnet50_2").claims is None
    assert archcompiler.check(archcompiler.load_spec("resnext50_32x4d")) == []


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["shufflenet_v2_x0_5", "convnext_tiny"])
def test_onnx_export_of_the_new_ops_matches_torch(builder, tmp_path):
    """channel_split / channel_shuffle and layer_norm / linear over channels / layer_scale survive ONNX."""
    pytest.importorskip("onnxruntime")
    assert_onnx_matches(_small(builder), tmp_path / "m.onnx")


def test_the_public_api_alone_resolves_shape_conditions():
    """A fresh `import archcompiler; archcompiler.load_spec(...)`: the lazily loaded API brings the IR's shape
    rules, which ResNet's `when: "stride != 1 or in_channels != out"` needs."""
    code = "import archcompiler\nprint(len(archcompiler.load_spec('resnet18').layers))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
