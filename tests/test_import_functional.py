"""Importing what a module computes, written the way timm writes its layers (#32): a module that calls
F.batch_norm / F.layer_norm / F.group_norm / F.linear with its own parameters, a learned gamma times a
branch, an optional forward argument, channel slices and splits into any sizes. The modules here are
written for the test (timm itself is measured in benchmarks/import_timm.py: never a dependency); each
import is verified by archc against the module, and checked again here: built, the module's state_dict
loads strictly and the logits are equal."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import run_archc, trained_like  # noqa: E402
from torch import nn  # noqa: E402

import archcompiler  # noqa: E402
from archcompiler import BackendError  # noqa: E402


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BatchNorm2d's parameters, read by F.batch_norm in its own forward, then an act."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.act = nn.SiLU()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return self.act(x)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: F.layer_norm over the channels-last view."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GroupNorm1(nn.GroupNorm):
    def __init__(self, c: int) -> None:
        super().__init__(1, c)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class Split(nn.Module):
    """CSPNet's and Res2Net's splits: into given sizes, into equal parts, the last part read as spx[-1]."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c // 4, c // 4, 3, padding=1)

    def forward(self, x):
        a, b = x.split([x.shape[1] // 4, 3 * x.shape[1] // 4], dim=1)
        parts = torch.split(b, x.shape[1] // 4, 1)
        return torch.cat([self.conv(a), parts[0], parts[-1], x[:, : x.shape[1] // 4]], 1)


class Net(nn.Module):
    INPUT_SHAPE = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = BatchNormAct(16)
        self.norm = LayerNorm2d(16)
        self.gn = GroupNorm1(16)
        self.gamma = nn.Parameter(torch.full((16,), 0.5))
        self.split = Split(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        if attn_mask is not None or is_causal:       # timm's ViT: an optional argument, traced at its default
            x = x * 2
        x = self.bn(self.stem(x))
        x = x + self.gamma.reshape(1, -1, 1, 1) * self.gn(self.norm(x))
        return self.head(self.split(x).mean((2, 3)))


class OwnLinear(nn.Linear):
    """A Linear whose forward calls F.linear with its own weight and bias (as timm's fast-path layers do)."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Tokens(nn.Module):
    """A transformer's MLP on tokens with timm's LayerScale (a vector gamma) and F.linear with own weights."""

    INPUT_SHAPE = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, 4)
        self.norm = nn.LayerNorm(8)
        self.fc = OwnLinear(8, 8)
        self.ls1 = nn.Parameter(torch.full((8,), 0.1))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.ls1 * self.fc(self.norm(x))
        return self.head(x[:, 0])


def _equal(text: str, model: nn.Module) -> None:
    built = archcompiler.build(archcompiler.load_spec(text)).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, *model.INPUT_SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = model(x), built(x)
    assert torch.allclose(want, got, rtol=1e-5, atol=1e-5), (want - got).abs().max()


@pytest.mark.parametrize("make", [Net, Tokens])
def test_functional_calls_with_own_parameters_import_exactly(make):
    model = trained_like(make())
    text = archcompiler.import_module(model, name="net")
    _equal(text, model)
    ops = {line.split("op: ")[1].split(",")[0].split("}")[0] for line in text.splitlines() if "op: " in line}
    if make is Net:
        assert {"layer_norm", "group_norm", "layer_scale", "channel_slice"} <= ops, ops
        assert "norm: batch_norm" in text and "act: silu" in text      # BatchNormAct after the stem conv
        assert "flat: true" in text          # the gamma a vector of C, reshaped in forward
    else:
        assert {"layer_scale", "linear", "layer_norm"} <= ops, ops


def test_the_command_imports_them_in_a_fresh_process(tmp_path):
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    module = source.split("class BatchNormAct", 1)[1].split("def _equal", 1)[0]
    (tmp_path / "timmlike.py").write_text("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
                                          "class BatchNormAct" + module)
    done = run_archc("import", "timmlike.py:Net", "-o", "net.yaml", cwd=tmp_path)
    assert done.returncode == 0 and "verified: the spec's outputs equal the source's" in done.stderr, done.stderr
    built = run_archc("build", "net.yaml", "-q", "-o", "net.pt", cwd=tmp_path)
    assert built.returncode == 0, built.stderr


def test_a_functional_call_with_the_models_own_parameters_is_refused_saying_why():
    class Root(nn.Module):
        INPUT_SHAPE = (3, 8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 3 * 64))

        def forward(self, x):
            return F.linear(x.flatten(1), self.weight)

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Root(), name="root")
    assert "reads parameters of the model itself" in info.value.errors[0].format()


def test_a_parameter_read_otherwise_is_refused_naming_it():
    class Odd(nn.Module):
        INPUT_SHAPE = (3, 8, 8)

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.table = nn.Parameter(torch.randn(4, 6, 6))

        def forward(self, x):
            return self.conv(x) + self.table.exp()

    with pytest.raises(BackendError) as info:
        archcompiler.import_module(Odd(), name="odd")
    message = info.value.errors[0].format()
    assert "'table'" in message and "directly" in message, message


class Mixer(nn.Module):
    """MLP-Mixer's block: token mixing (LayerNorm, transpose, a Linear over the tokens, back), channel
    mixing, and the head on the tokens' mean."""

    INPUT_SHAPE = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.norm1 = nn.LayerNorm(8)
        self.tok1, self.tok2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.norm2 = nn.LayerNorm(8)
        self.ch1, self.ch2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.tok2(F.gelu(self.tok1(self.norm1(x).transpose(1, 2)))).transpose(1, 2)
        x = x + self.ch2(F.gelu(self.ch1(self.norm2(x))))
        return self.head(x.mean(1))


MIXER_SPEC = """name: mixer
input: [3, 16, 16]
layers:
  - {name: stem, op: patch_embed, out: 8, patch: 4}
  - {name: norm1, op: layer_norm}
  - {name: t, op: transpose}
  - {name: tok1, op: linear, out: 32, over: tokens, act: gelu}
  - {name: tok2, op: linear, out: 16, over: tokens}
  - {name: back, op: transpose}
  - {name: add, op: add, inputs: [stem, back]}
  - {name: pool, op: token_mean}
  - {name: head, op: linear, out: 3}
"""


def test_token_mixing_imports_as_transpose_and_token_mean():
    model = trained_like(Mixer())
    text = archcompiler.import_module(model, name="mixer")
    assert "op: transpose" in text and "op: token_mean" in text
    _equal(text, model)


def test_transpose_and_token_mean_facts_against_torch():
    from conftest import assert_memory_measured

    report = archcompiler.analyze(MIXER_SPEC)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["t"]["output"] == [8, 16] and rows["pool"]["output"] == [8] and rows["t"]["macs"] == 0
    model = archcompiler.build(MIXER_SPEC, seed=0).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        s = model.stem(x).flatten(2).transpose(1, 2)
        y = s + model.tok2(F.gelu(model.tok1(model.norm1(s).transpose(1, 2)))).transpose(1, 2)
        assert torch.allclose(model(x), model.head(y.mean(1)), atol=1e-6)
    assert_memory_measured(MIXER_SPEC)
    with pytest.raises(archcompiler.GraphError) as info:
        archcompiler.analyze(MIXER_SPEC.replace("  - {name: stem, op: patch_embed, out: 8, patch: 4}\n",
                                                "  - {name: stem, op: conv, out: 8, kernel: 4, stride: 4}\n"))
    assert "transpose needs a sequence" in info.value.errors[0].message or \
        "needs a sequence" in str(info.value), info.value
