"""The ops archc gained for timm's models, through ONNX and back (issue #32): a spec using them is built with
its weights moved off their initial values (a zero GRN weight or learned bias would hide a wrong reading),
exported (``archc build --emit onnx``'s export), and ``archc import`` of the file, in a fresh process, gives a
spec that computes what onnxruntime computes (the import's own check), with each op read back; the attention
variants archc does not read from ONNX are refused in one line naming a node. The table of every op is in
benchmarks/RESULTS.md, "ONNX round trip of the ops added for timm"."""

from __future__ import annotations

import warnings

import pytest
from conftest import run_archc

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

# every op of the table read back exactly, in one network: a map's ops, then its positions as tokens
OPS = """name: timm_ops
input: [3, 16, 16]
layers:
  - {name: stem, op: conv, out: 12, kernel: 3, padding: 1, act: relu}
  - {name: scaled, op: affine, scale: 0.5, bias: 1}
  - {name: aff, op: affine, scale: learned, bias: learned, per: channel}
  - {name: fill, op: pad, left: 2, top: 1, right: 1, value: 0.5}
  - {name: mirror, op: pad, left: 1, right: 2, bottom: 3, mode: reflect}
  - {name: edge, op: pad, left: 1, right: 1, top: 1, bottom: 1, mode: replicate}
  - {name: std, op: std_conv, out: 12, kernel: 3, stride: 2, padding: same, groups: 2}
  - {name: gn, op: group_norm, groups: 4, act: relu}
  - {name: grn, op: grn, eps: 0.001}
  - {name: ls, op: layer_scale}
  - {name: soft, op: branch_softmax, branches: 2, groups: 3}
  - {name: soft1, op: branch_softmax, branches: 3}
  - {name: both, op: branch_sum, branches: 2}
  - {name: part, op: channel_slice, start: 1, end: 5}
  - {name: up, op: interpolate, scale: 2}
  - {name: tokens, op: to_tokens}
  - {name: cut, op: token_slice, start: 2, end: 60}
  - {name: t, op: transpose}
  - {name: mix, op: linear, out: 58, over: tokens}
  - {name: back, op: transpose}
  - {name: gamma, op: layer_scale}
  - {name: cls_token, op: learned_token}
  - {name: cat, op: concat, inputs: [cls_token, gamma]}
  - {name: mean, op: token_mean}
  - {name: fc, op: linear, out: 5}
"""


def _exported(text: str, path) -> None:
    """The spec built, every parameter moved by seeded noise, written as ONNX by archc's exporter."""
    from archcompiler.api import load_spec
    from archcompiler.backends.torch import build
    from archcompiler.backends.torch.export import export

    spec = load_spec(text)
    model = build(spec, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model, spec, "onnx", path)


def test_the_ops_added_for_timm_come_back_from_onnx_exactly(tmp_path):
    """One import: verified against onnxruntime, each op read back (a learned per-channel affine as its scale, a
    layer_scale, and its bias; std_conv as a conv with the standardized weight the exporter folds; the learned
    token concatenated as a class_token; scale 2 as the size it gives)."""
    _exported(OPS, tmp_path / "m.onnx")
    done = run_archc("import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"))
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr and "(onnxruntime)" in done.stderr, done.stderr
    text = (tmp_path / "m.yaml").read_text()
    for line in ("op: affine, scale: 0.5}", "op: affine, bias: 1.0}", "{name: aff.scale, op: layer_scale}",
                 "{name: aff.bias, op: affine, bias: learned}", "op: pad, left: 2, right: 1, top: 1, value: 0.5}",
                 "op: pad, left: 1, right: 2, bottom: 3, mode: reflect}", "mode: replicate}",
                 "op: conv, out: 12, kernel: 3, stride: 2, padding: same, groups: 2}", "op: group_norm, groups: 4",
                 "op: grn, eps: 0.001}", "{name: ls, op: layer_scale}", "op: branch_softmax, branches: 2, groups: 3}",
                 "op: branch_softmax, branches: 3}", "op: branch_sum, branches: 2}",
                 "op: channel_slice, start: 1, end: 5}", "op: interpolate, size: [22, 24]}", "op: to_tokens}",
                 "op: token_slice, start: 2, end: 60}", "op: transpose}", "op: linear, out: 58, over: tokens}",
                 "{name: gamma, op: layer_scale}", "op: class_token}"):
        assert line in text, (line, text)
    assert text.count("op: transpose}") == 2


@pytest.mark.slow
@pytest.mark.parametrize("layer", [
    "{name: attn, op: talking_heads, heads: 4}",
    "{name: attn, op: self_attention, heads: 2, layout: beit, grid: [4, 4]}",     # (the exporter's math kernel)
])
def test_an_attention_archc_does_not_read_from_onnx_is_refused_in_one_line(tmp_path, layer):
    text = f"""name: refused
input: [3, 16, 16]
layers:
  - {{name: patch, op: patch_embed, out: 16, patch: 4}}
  - {{name: cls, op: class_token}}
  - {layer}
  - {{name: mean, op: token_mean}}
  - {{name: fc, op: linear, out: 5}}
"""
    (tmp_path / "s.yaml").write_text(text)
    built = run_archc("build", str(tmp_path / "s.yaml"), "--emit", "onnx", "-o", str(tmp_path / "m.onnx"))
    assert built.returncode == 0, built.stderr
    done = run_archc("import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ": node " in lines[0], lines
    assert not (tmp_path / "m.yaml").exists()


class _Branches(torch.nn.Module):
    """What timm's ResNeSt (SplitAttn with RadixSoftmax, radix 2) and SKNet (SelectiveKernel: paths stacked
    along a new axis 1) compute, written here: branches held as N x K x C x H x W, summed, weighted by a
    softmax over K, multiplied and summed again."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 16, 1)
        self.path3, self.path5 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2)
        self.select = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        F = torch.nn.functional
        x = F.relu(self.stem(x))
        b = x.shape[0]
        split = F.relu(self.conv(x)).reshape(b, 2, 8, 16, 16)          # ResNeSt's split attention
        attn = self.fc2(F.relu(self.fc1(split.sum(dim=1).mean((2, 3), keepdim=True))))
        attn = F.softmax(attn.view(b, 1, 2, -1).transpose(1, 2), dim=1).reshape(b, -1)
        x = (split * attn.view(b, -1, 1, 1).reshape(b, 2, 8, 1, 1)).sum(dim=1)
        paths = torch.stack([F.relu(self.path3(x)), F.relu(self.path5(x))], dim=1)      # SKNet's
        weights = F.softmax(self.select(paths.sum(1).mean((2, 3), keepdim=True)).view(b, 2, 8, 1, 1), dim=1)
        x = (paths * weights).sum(1)
        return self.fc(x.mean((2, 3)))


@pytest.mark.slow
def test_resnest_and_sknet_branches_exported_by_torch_come_back_exactly(tmp_path):
    """torch's exporter (as archc's, the math attention kernel aside) writes the stack as Unsqueeze and Concat,
    RadixSoftmax's view as N x G x K x -1, and merges the Reshapes around the softmax: read back as concat,
    branch_sum, branch_softmax and mul, verified against onnxruntime."""
    model = _Branches().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), None, input_names=["image"],
                                    output_names=["logits"], dynamo=True, optimize=False)
        program.optimize()
        program.save(str(tmp_path / "m.onnx"), external_data=False)
    done = run_archc("import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.yaml"))
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr and "(onnxruntime)" in done.stderr, done.stderr
    text = (tmp_path / "m.yaml").read_text()
    assert text.count("op: branch_sum, branches: 2}") == 4 and text.count("op: branch_softmax, branches: 2}") == 2
    assert text.count("op: mul") == 2 and "op: concat" in text
