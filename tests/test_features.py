"""Feature maps as outputs (``features:``, ``--features``; issue #34): the chosen layers' maps, by name or
by stage index, with what follows them dropped; checked against timm's ``features_only`` shapes (recorded
below as data: timm is never imported here) and against the whole network's own outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import SPECS, run_archc

import archcompiler
from archcompiler.errors import ArchcError

# timm 1.0.31, features_only=True at 224 x 224, batch 1 (benchmarks/features.py; RESULTS.md): per model,
# the stage indices asked for and each map's shape as timm gives it (its Swin gives N x H x W x C)
TIMM = {
    "resnet50": ("resnet50", [0, 1, 2, 3, 4],
                 [(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]),
    "mobilenet_v3_large": ("mobilenetv3_large_100", [0, 1, 2, 3, 4],
                           [(16, 112, 112), (24, 56, 56), (40, 28, 28), (112, 14, 14), (960, 7, 7)]),
    "convnext_tiny": ("convnext_tiny", [0, 1, 2, 3], [(96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7)]),
    "swin_t": ("swin_tiny_patch4_window7_224", [0, 1, 2, 3],
               [(56, 56, 96), (28, 28, 192), (14, 14, 384), (7, 7, 768)]),
    "vit_b_16": ("vit_base_patch16_224", [9, 10, 11], [(768, 14, 14)] * 3),    # timm's default: the last three
}
TIMM_REDUCTIONS = {"resnet50": [2, 4, 8, 16, 32], "mobilenet_v3_large": [2, 4, 8, 16, 32],
                   "convnext_tiny": [4, 8, 16, 32], "swin_t": [4, 8, 16, 32], "vit_b_16": [16] * 3}


@pytest.mark.parametrize("builder", list(TIMM))
def test_stage_indices_give_the_maps_timms_features_only_gives(builder):
    _, indices, shapes = TIMM[builder]
    report = archcompiler.analyze(builder, {"features": indices})
    got = [tuple(f["shape"]) for f in report["features"]]
    if builder == "swin_t":
        shapes = [(c, h, w) for h, w, c in shapes]          # archc's maps are C x H x W, as timm's ViT's
    assert got == shapes
    assert [f["reduction"] for f in report["features"]] == TIMM_REDUCTIONS[builder]
    assert [f["stage"] for f in report["features"]] == indices
    # what follows the last map is gone: the head's parameters and operations are not counted
    whole = archcompiler.analyze(builder)
    assert report["total"]["params"] < whole["total"]["params"]
    assert report["features"][-1]["params"] == report["total"]["params"]
    assert report["features"][-1]["macs"] == report["total"]["macs"]


def test_names_are_the_specs_or_torchs_and_a_map_equals_the_whole_networks_output():
    import torch

    small = ["input=[3, 64, 64]"]
    whole = archcompiler.build("resnet18", small, seed=0).eval()
    # the whole network with the same layers also as outputs: archc's own multi-output path
    both = archcompiler.build("resnet18", [*small, "outputs={main: {layer: prob}, a: {layer: conv3_x}, "
                                          "b: {layer: conv5_x}}"], seed=0).eval()
    feats = archcompiler.build("resnet18", [*small, "features=[layer2, conv5_x]"], seed=0).eval()
    assert set(feats.state_dict()) < set(whole.state_dict())
    feats.load_state_dict({k: v for k, v in whole.state_dict().items() if k in feats.state_dict()}, strict=True)
    both.load_state_dict(whole.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = feats(x), both(x)
    assert isinstance(out, dict) and list(out) == ["layer2", "conv5_x"]
    assert torch.equal(out["layer2"], ref.a) and torch.equal(out["conv5_x"], ref.b)
    scripted = torch.jit.script(feats)
    assert torch.equal(scripted(x)["layer2"], out["layer2"])
    with pytest.raises(RuntimeError, match="feature extractor"):
        feats.predict_proba(x)


def test_a_transformers_tokens_become_a_map_without_the_class_token():
    import torch

    whole = archcompiler.build(SPECS / "vit-tiny.yaml", seed=0).eval()
    both = archcompiler.build(SPECS / "vit-tiny.yaml", ["outputs={main: {layer: prob}, t: {layer: layers/1}}"],
                              seed=0).eval()
    both.load_state_dict(whole.state_dict())
    feats = archcompiler.build(SPECS / "vit-tiny.yaml", ["features=[1]"], seed=0).eval()
    feats.load_state_dict({k: v for k, v in whole.state_dict().items() if k in feats.state_dict()})
    c, h, w = whole.INPUT_SHAPE
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (key, got), = feats(x).items()
        tokens = both(x).t
    n, s, d = tokens.shape
    side = int((s - 1) ** 0.5)
    assert got.shape == (n, d, side, side)
    assert torch.equal(got, tokens[:, 1:].reshape(n, side, side, d).permute(0, 3, 1, 2))
    assert key.endswith("1")            # the block's torch module name


def test_a_checkpoint_of_the_whole_network_loads_into_its_feature_extractor(tmp_path):
    import torch

    whole = archcompiler.build("resnet18", ["input=[3, 64, 64]"], seed=0)
    path = tmp_path / "whole.pt"
    torch.save(whole.state_dict(), path)
    feats = archcompiler.build("resnet18", ["input=[3, 64, 64]", "features=[layer3]"], weights=path)
    assert torch.equal(feats.state_dict()["layer3.0.conv1.weight"], whole.state_dict()["layer3.0.conv1.weight"])
    # a tensor of a kept layer that does not fit is still refused
    state = whole.state_dict()
    state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"][:, :1]
    torch.save(state, path)
    with pytest.raises(ArchcError, match="layer2.0.conv1.weight"):
        archcompiler.build("resnet18", ["input=[3, 64, 64]", "features=[layer3]"], weights=path)


@pytest.mark.parametrize("features, message", [
    ("[layer9]", "feature 'layer9' names no layer of resnet18"),
    ("[5]", "feature index 5 is out of range: the network has 5 stage(s)"),
    ("[-6]", "feature index -6 is out of range"),
    ("[fc]", "a feature is an image"),
    ("[layer2, conv3_x]", "feature 'conv3_x' is chosen twice"),
])
def test_a_name_or_index_that_is_no_stage_is_refused_never_dropped(features, message):
    with pytest.raises(ArchcError) as info:
        archcompiler.analyze("resnet18", [f"features={features}"])
    assert message in str(info.value)


NET = """name: net
input: [3, 32, 32]
layers:
  - {name: conv1, op: conv, out: 8, kernel: 3, stride: 2, padding: 1}
  - {name: conv2, op: conv, out: 8, kernel: 3, stride: 2, padding: 1}
  - {name: pool, op: global_avg_pool}
  - {name: fc, op: linear, out: 2}
"""


def test_a_bad_feature_in_a_spec_file_is_said_at_its_line(tmp_path):
    (tmp_path / "net.yaml").write_text(NET + "features: [1, blocks/9]\n")
    result = run_archc("flops", str(tmp_path / "net.yaml"))
    assert result.returncode == 1
    assert "net.yaml:8:15: " in result.stderr and "'blocks/9' names no layer" in result.stderr, result.stderr
    (tmp_path / "s.yaml").write_text(NET + "stages: [nothing/*]\nfeatures: [0]\n")
    result = run_archc("flops", str(tmp_path / "s.yaml"))
    assert result.returncode == 1 and "s.yaml:8:10: " in result.stderr, result.stderr
    assert "stage 'nothing/*' names no layer" in result.stderr
    (tmp_path / "ok.yaml").write_text(NET + "features: [0, -1]\n")      # the default stages: conv1, conv2
    report = archcompiler.analyze(tmp_path / "ok.yaml")
    assert [(f["name"], f["shape"], f["reduction"]) for f in report["features"]] == [
        ("conv1", [8, 16, 16], 2), ("conv2", [8, 8, 8], 4)]


def test_the_command_line_builds_and_counts_a_feature_extractor_in_a_fresh_process(tmp_path):
    result = run_archc("build", "resnet50", "--features", "layer2,layer3,layer4", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "parameters: 23,508,032 (torch); equals archc flops' total 23,508,032" in result.stdout
    result = run_archc("flops", "resnet50", "--features", "1,2,-1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "feature layer1 (conv2_x): 56x56x256, stride 4, computed by 225K params and 786M multiply-adds" in result.stdout
    assert "feature layer4 (conv5_x): 7x7x2048, stride 32, computed by 23.5M params" in result.stdout
    data = json.loads(run_archc("flops", "swin_t", "--features", "features.3,-1", "--format", "json").stdout)
    assert [(f["name"], f["layer"], f["shape"]) for f in data["features"]] == [
        ("features.3", "stage2", [192, 28, 28]), ("features.7", "stage4", [768, 7, 7])]
    # archc flops stays torch-free with features
    probe = "import sys, archcompiler; archcompiler.analyze('vit_b_16', {'features': [-1]}); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
    # training needs the classes: a feature extractor is refused at its feature
    (tmp_path / "data" / "a").mkdir(parents=True)
    result = run_archc("train", "resnet18", "--data", "data", "--set", "features=[1]", cwd=tmp_path)
    assert result.returncode == 1 and "is a feature extractor" in result.stderr


def test_a_to_map_layer_written_by_hand():
    import torch

    spec = archcompiler.load_spec(
        "name: t\ninput: [3, 32, 48]\nlayers:\n  - {name: pe, op: patch_embed, out: 8, patch: 8}\n"
        "  - {name: ct, op: class_token}\n  - {name: m, op: to_map, skip: 1, height: 4}\n")
    model = archcompiler.build(spec, seed=0).eval()
    x = torch.randn(1, 3, 32, 48)
    assert model(x).shape == (1, 8, 4, 6)
    with pytest.raises(ArchcError, match="do not lay out as 5 rows"):
        archcompiler.analyze(archcompiler.load_spec(spec, ["m.height=5"]))


def test_features_before_a_repeated_rows_end_and_the_papers_claims_of_the_whole_network(tmp_path):
    # ViT's first blocks: the row of twelve is cut short (it was an internal error: its last block was gone)
    report = archcompiler.analyze("vit_b_16", {"features": [0, 1]})
    assert [f["name"] for f in report["features"]] == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    assert [r["name"] for r in report["rows"]][-1] == "layers"
    # the claims are the paper's, of the whole network: checked on it, whatever features: chooses
    assert archcompiler.check("resnet50", {"features": [1]}) == archcompiler.check("resnet50")
    (tmp_path / "n.yaml").write_text(NET.replace("stride: 2, padding: 1}", "stride: 2, padding: 1, claims: "
                                                 "{output: 8x8x8}}", 1).replace(
        "{name: conv1, op: conv, out: 8, kernel: 3, stride: 2, padding: 1, claims: {output: 8x8x8}}",
        "{name: conv1, op: conv, out: 8, kernel: 3, stride: 2, padding: 1, claims: {output: 16x16x8}}")
                                     + "  - {name: c2, op: conv, out: 4, kernel: 1, input: conv2, claims: {output: 8x8x4}}\n"
                                     + "outputs: {main: {layer: fc}, side: {layer: c2}}\nfeatures: [0]\n")
    result = run_archc("validate", str(tmp_path / "n.yaml"))
    assert result.returncode == 0 and "2 claimed output sizes match" in result.stdout, result.stdout + result.stderr


def test_a_feature_extractor_draws_and_reports_with_its_rows_cut_short(tmp_path):
    for name in ("vit_b_16", "swin_t"):
        result = run_archc("draw", name, "--features", "0", "--collapse", "-o", str(tmp_path / f"{name}.svg"))
        assert result.returncode == 0 and (tmp_path / f"{name}.svg").read_text().count("<svg") == 1, result.stderr
    result = run_archc("report", "vit_b_16", "--features", "1", "-o", str(tmp_path / "v.html"))
    assert result.returncode == 0, result.stderr
