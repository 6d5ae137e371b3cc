"""Ops from other packages (plugins, entry-point group ``archcompiler.ops``): the registry with fake
plugins in this process (listed by ``archc ops``, validated, counted; a plugin that fails or takes a name
already given is left out and said, never a crash), and the example plugin ``examples/plugins/gem_pool``
installed into a fresh virtual environment and used through its ``archc``, then uninstalled."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
import yaml
from conftest import ROOT, assert_memory_measured, run_archc
from pydantic import Field

from archcompiler.errors import GraphError
from archcompiler.ops import LayerOp, Op, OpDef, Params, ShapeError, Style, TorchCode, _registry
from archcompiler.spec.layers import LayerBase, Pair, PosFloat, PosInt

PLUGIN = ROOT / "examples" / "plugins" / "gem_pool"
RETRIEVAL = PLUGIN / "retrieval.yaml"


# ----------------------------------------------------------------------------- fake plugins, in process


class FakeScale(LayerBase):
    """The map times a constant (a fake plugin's op).

    This second paragraph is not the one line archc ops shows."""

    op: Literal["fake_scale"]
    factor: PosFloat = Field(2.0, description="the constant")
    groups: PosInt = 1
    patch: Pair = Field(1, description="a pair, as a kernel is")
    mode: Literal["first", "second"] = "first"


def _fake_shape(a: dict, shapes: list) -> tuple:
    if len(shapes) != 1:
        raise ShapeError(f"fake_scale takes one input, got {len(shapes)}")
    return shapes[0]


FAKE_OP = Op(
    layers=(LayerOp(FakeScale, lambda s: [("", "fake_scale", {"factor": s.factor})]),),
    kinds=(OpDef("fake_scale", _fake_shape, attrs=("factor",),
                 torch=TorchCode(None, lambda a, x, m, ip: f"{x[0]} * {a['factor']!r}"),
                 style=Style("box", "#ffffff"),
                 params=lambda a, i, o: Params(weights=0),
                 macs=lambda a, i, o: math.prod(o)),),       # one multiply-add per element, to be counted
)


class Entry:
    """An entry point as importlib.metadata gives it: name, value, load(), dist."""

    def __init__(self, name: str, load, dist: str = "archc-fake", value: str | None = None):
        self.name, self.value, self._load = name, value or f"{dist.replace('-', '_')}.op", load
        self.dist = SimpleNamespace(name=dist)

    def load(self):
        return self._load()


def _fails():
    raise RuntimeError("the plugin's own bug")


def _clashing() -> Op:
    class Shuffle(LayerBase):
        """A second channel_shuffle."""

        op: Literal["channel_shuffle"]

    return Op(layers=(LayerOp(Shuffle, lambda s: [("", "channel_shuffle", {"groups": 1})]),))


@pytest.fixture
def plugins(monkeypatch):
    """``plugins(*entries)``: the registry rebuilt with these entry points as the installed plugins; the
    registry archc had is back after the test."""
    def install(*entries: Entry) -> _registry.Registry:
        monkeypatch.setattr(_registry, "_entry_points", lambda: list(entries))
        monkeypatch.setattr(_registry, "_REGISTRY", None)
        return _registry.registry()
    monkeypatch.setattr(_registry, "_REGISTRY", None)      # restored at teardown, whatever the test did
    return install


FAKE_SPEC = ("name: t\ninput: [4, 6, 6]\nlayers:\n"
             "  - {name: c, op: channel_shuffle, groups: 2}\n"
             "  - {name: s, op: fake_scale, factor: 3.0}\n")


def test_a_plugin_op_is_listed_with_its_fields_and_provider(plugins, capsys):
    from archcompiler.cli import main

    plugins(Entry("fake_scale", lambda: FAKE_OP))
    assert main(["ops", "--format", "json"]) == 0
    captured = capsys.readouterr()
    listed = json.loads(captured.out)
    assert captured.err == ""
    ops = [e["op"] for e in listed]
    assert ops[-1] == "fake_scale" and "channel_shuffle" in ops       # archc's own first, the plugin's after
    own = [e["op"] for e in listed if e["provider"] == "archc"]
    assert own == sorted(own) and len(own) == len(ops) - 1
    fake = listed[-1]
    assert fake["provider"] == "archc-fake" and fake["kinds"] == ["fake_scale"]
    assert fake["doc"] == "The map times a constant (a fake plugin's op)."
    assert fake["fields"] == [
        {"name": "factor", "type": "float > 0", "default": 2.0, "doc": "the constant"},
        {"name": "groups", "type": "int >= 1", "default": 1, "doc": ""},
        {"name": "patch", "type": "int | [int, int]", "default": 1, "doc": "a pair, as a kernel is"},
        {"name": "mode", "type": "'first' | 'second'", "default": "first", "doc": ""}]
    assert main(["ops", "fake_scale"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("fake_scale  (from archc-fake)\n  The map times a constant")
    assert re.search(r"factor +float > 0 += 2\.0 +the constant", table)
    assert main(["ops", "fake_scale", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == fake


def test_a_plugin_op_validates_and_counts(plugins, tmp_path, capsys):
    import archcompiler
    from archcompiler.cli import main

    plugins(Entry("fake_scale", lambda: FAKE_OP))
    report = archcompiler.analyze(FAKE_SPEC)
    assert report["by_op"]["fake_scale"]["macs"] == 4 * 6 * 6
    assert report["total"]["flops"] == 2 * 4 * 6 * 6
    spec = tmp_path / "t.yaml"
    spec.write_text(FAKE_SPEC)
    assert main(["validate", str(spec)]) == 0
    assert capsys.readouterr().out.startswith(f"ok   {spec}")
    spec.write_text(FAKE_SPEC.replace("factor: 3.0", "factor: -1"))
    assert main(["validate", str(spec)]) == 1
    assert f"{spec}:5:" in capsys.readouterr().err


@pytest.mark.parametrize("entry, said", [
    (Entry("broken", _fails, dist="archc-broken"),
     "archc_broken.op: could not be loaded (RuntimeError: the plugin's own bug)"),
    (Entry("clash", _clashing, dist="archc-clash"), "op 'channel_shuffle' is already provided by archc"),
    (Entry("junk", lambda: {"not": "an op"}, dist="archc-junk"), "OP is a dict, not an archcompiler.ops.Op"),
], ids=["raises", "takes-a-built-in-name", "not-an-op"])
def test_a_plugin_that_fails_is_left_out_and_said(plugins, capsys, entry, said):
    import archcompiler
    from archcompiler.cli import main

    reg = plugins(entry, Entry("fake_scale", lambda: FAKE_OP))
    assert len(reg.problems) == 1 and said in reg.problems[0]
    assert reg.providers["channel_shuffle"].label == "archc" and reg.providers["fake_scale"].label == "archc-fake"
    assert main(["ops", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert said in captured.err and "warning" in captured.err
    assert [e["op"] for e in json.loads(captured.out)].count("channel_shuffle") == 1
    # the rest works: archc's own op and the good plugin's
    assert archcompiler.analyze(FAKE_SPEC)["by_op"]["fake_scale"]["macs"] == 4 * 6 * 6


def test_two_plugins_that_give_one_name_keep_the_first(plugins):
    reg = plugins(Entry("a", lambda: FAKE_OP, dist="archc-a"), Entry("b", lambda: FAKE_OP, dist="archc-b"))
    assert reg.providers["fake_scale"].label == "archc-a"
    assert reg.problems == ["archc_b.op: op 'fake_scale' is already provided by archc-a"]


def test_an_unknown_op_is_refused_with_a_hint(plugins, capsys):
    from archcompiler.cli import main

    plugins()
    assert main(["ops", "chanel_shuffle"]) == 1
    assert "no op 'chanel_shuffle' (did you mean 'channel_shuffle'?)" in capsys.readouterr().err
    assert main(["ops", "gem_pool"]) == 1       # a plugin archc knows of, not installed: its package is named
    err = capsys.readouterr().err
    assert "gem_pool" in err and "archc-gem-pool" in err


def test_archc_ops_never_imports_torch():
    code = ("import sys\nfrom archcompiler.cli import main\nassert main(['ops', '--format', 'json']) == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert run_archc("ops").returncode == 0


# ----------------------------------------------------------------------------- the example plugin, in process


@pytest.fixture
def gem_pool(plugins, monkeypatch):
    """The example plugin's op, registered as if installed (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    yield plugins(Entry("gem_pool", lambda: importlib.import_module("archc_gem_pool.op"), dist="archc-gem-pool"))
    for name in [m for m in sys.modules if m.split(".")[0] == "archc_gem_pool"]:
        del sys.modules[name]


def test_gem_pool_facts(gem_pool):
    import archcompiler

    report = archcompiler.analyze(str(RETRIEVAL))
    pool = next(r for r in report["rows"] if r["name"] == "pool")
    assert pool["output"] == [128, 1, 1] and pool["params"] == 1 and pool["macs"] == 0
    assert min(pool["receptive_field"]) >= 64           # one window over the whole map: the whole image
    assert gem_pool.providers["gem_pool"].label == "archc-gem-pool"
    with pytest.raises(GraphError) as info:
        archcompiler.analyze("name: t\ninput: [3, 8, 8]\nlayers:\n  - {name: fc, op: linear, out: 4}\n"
                             "  - {name: pool, op: gem_pool}\n")
    problem = info.value.errors[0]
    assert "gem_pool needs an image (H x W x C) input, got a flat 4" in problem.message and problem.line == 5


def test_gem_pool_memory_matches_a_measurement(gem_pool):
    """The inference peak exactly (the clamped copy and its power live together while the power runs);
    a training step within 1% (autograd keeps both, and the power's backward makes five maps)."""
    pytest.importorskip("torch")
    assert_memory_measured(RETRIEVAL)


# ----------------------------------------------------------------------------- the example plugin, installed


def _venv(folder: Path) -> Path:
    """A fresh virtual environment that sees this Python's packages (archc, torch), with the example
    plugin installed from a copy of its folder (editable; nothing is fetched); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder / "venv")],
                   check=True, timeout=300)
    python = folder / "venv" / "bin" / "python"
    source = folder / "gem_pool"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                             "-e", str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def _in(python: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run in a fresh process of the virtual environment's python (archc from this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


# the hand-written reference of retrieval.yaml (its state_dict keys: archc's module paths), its FLOPs as
# torch counts them, and the checks run in the virtual environment
CHECKS = textwrap.dedent('''
    import json, sys
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    import archcompiler


    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            for i, (cin, cout) in enumerate([(3, 32), (32, 64), (64, 128)], 1):
                block = nn.Module()
                block.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
                block.bn = nn.BatchNorm2d(cout)
                setattr(self, f"conv{i}", block)
            self.pool = nn.Module()
            self.pool.p = nn.Parameter(torch.full((1,), 3.0))
            self.embed = nn.Linear(128, 64)

        def forward(self, x):
            for i in (1, 2, 3):
                block = getattr(self, f"conv{i}")
                x = F.relu(block.bn(block.conv(x)))
            p = self.pool.p
            x = F.avg_pool2d(x.clamp(min=1e-6) ** p, (x.shape[2], x.shape[3])) ** (1 / p)
            return self.embed(torch.flatten(x, 1))


    def same(model, reference, x):
        model.eval(), reference.eval()
        with torch.no_grad():
            return (model(x) - reference(x)).abs().max().item()


    what, *args = sys.argv[1:]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = {}
    if what == "build":             # args: model.pt, the emitted source
        model = archcompiler.load_model(args[0])
        with torch.no_grad():
            model.pool.p.fill_(2.5)             # a learned p, not the initial one
            for name, t in model.state_dict().items():
                if "running" in name:
                    t.uniform_(0.5, 1.5)
        reference = Reference()
        reference.load_state_dict(model.state_dict())
        out["build"] = same(model, reference, x)
        out["params"] = sum(t.numel() for t in reference.parameters())
        with FlopCounterMode(display=False) as counter:
            reference.eval()(x[:1])
        out["flops"] = counter.get_total_flops()
        import importlib.util
        spec = importlib.util.spec_from_file_location("emitted", args[1])
        emitted = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(emitted)
        standalone = emitted.Retrieval()
        standalone.load_state_dict(model.state_dict())
        out["emitted"] = same(standalone, reference, x)
    else:                           # import: args: the imported spec; the traced model is mymodel.make()
        sys.path.insert(0, ".")
        import mymodel
        original = mymodel.make()
        model = archcompiler.build(args[0], seed=1)
        model.load_state_dict(original.state_dict())
        out["import"] = same(model, original, x)
    print(json.dumps(out))
''')

MYMODEL = textwrap.dedent('''
    import torch
    from torch import nn

    from archc_gem_pool.torch import GeM


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                          nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
            self.gem = GeM(p=2.5, eps=1e-5)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.gem(self.features(x)), 1))


    def make():
        torch.manual_seed(0)
        net = Net()
        with torch.no_grad():
            net.gem.p.fill_(2.75)
        return net.eval()
''')


def _layers(node) -> list[dict]:
    """Every mapping with an ``op`` in a spec's YAML, wherever it is (layers, blocks)."""
    if isinstance(node, dict):
        return ([node] if "op" in node else []) + [m for v in node.values() for m in _layers(v)]
    if isinstance(node, list):
        return [m for v in node for m in _layers(v)]
    return []


@pytest.mark.slow
def test_the_gem_pool_plugin_installed_in_a_fresh_environment(tmp_path):
    python = _venv(tmp_path)
    seen = _in(python, "-c", "import archcompiler, archc_gem_pool; print(archcompiler.__file__)")
    assert seen.returncode == 0 and seen.stdout.strip() == str(ROOT / "archcompiler" / "__init__.py"), seen.stderr

    listed = _in(python, "-m", "archcompiler", "ops", "--format", "json")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    gem = next(e for e in json.loads(listed.stdout) if e["op"] == "gem_pool")
    assert gem["provider"] == "archc-gem-pool" and [f["name"] for f in gem["fields"]] == ["p", "eps"]
    assert gem["fields"][0]["default"] == 3.0 and gem["fields"][1]["default"] == 1e-6

    valid = _in(python, "-m", "archcompiler", "validate", str(RETRIEVAL))
    assert valid.returncode == 0 and valid.stdout.startswith("ok"), valid.stderr
    flops = _in(python, "-m", "archcompiler", "flops", str(RETRIEVAL), "--format", "json")
    assert flops.returncode == 0, flops.stderr
    report = json.loads(flops.stdout)
    pool = next(r for r in report["rows"] if r["name"] == "pool")
    assert pool["output"] == [128, 1, 1] and pool["params"] == 1 and pool["macs"] == 0
    assert pool["elementwise"] == 3 * 128 * 8 * 8 + 128

    source = tmp_path / "retrieval.py"
    emitted = _in(python, "-m", "archcompiler", "build", str(RETRIEVAL), "--emit", "python", "-o", str(source), "-q")
    assert emitted.returncode == 0, emitted.stderr
    assert "from archc_gem_pool.torch import GeM" in source.read_text()
    built = _in(python, "-m", "archcompiler", "build", str(RETRIEVAL), "-o", str(tmp_path / "retrieval.pt"), "-q")
    assert built.returncode == 0, built.stderr
    (tmp_path / "checks.py").write_text(CHECKS)
    ran = _in(python, str(tmp_path / "checks.py"), "build", str(tmp_path / "retrieval.pt"), str(source))
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout)
    assert got["build"] < 1e-5 and got["emitted"] < 1e-5
    assert got["params"] == report["total"]["params"] and got["flops"] == report["total"]["flops"]

    (tmp_path / "mymodel.py").write_text(MYMODEL)
    imported = _in(python, "-m", "archcompiler", "import", str(tmp_path / "mymodel.py") + ":make",
                   "--input", "3x64x64", "-o", str(tmp_path / "imported.yaml"))
    assert imported.returncode == 0, imported.stderr
    text = (tmp_path / "imported.yaml").read_text()
    assert [{k: v for k, v in layer.items() if k in ("op", "p", "eps")} for layer in _layers(yaml.safe_load(text))
            if layer.get("op") == "gem_pool"] == [{"op": "gem_pool", "p": 2.75, "eps": 1e-5}], text
    ran = _in(python, str(tmp_path / "checks.py"), "import", str(tmp_path / "imported.yaml"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["import"] < 1e-5
    assert "verified: the spec's outputs equal the source's" in imported.stderr

    # the other commands a spec goes through: check, the diagram, the report, ONNX, a short training run
    for args in (["check", str(RETRIEVAL)], ["draw", str(RETRIEVAL), "--format", "dot", "-o", str(tmp_path / "r.dot")],
                 ["report", str(RETRIEVAL), "-o", str(tmp_path / "r.html")],
                 ["build", str(RETRIEVAL), "--emit", "onnx", "-o", str(tmp_path / "r.onnx"), "-q"]):
        done = _in(python, "-m", "archcompiler", *args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    assert "pool\\ngem pool p 3" in (tmp_path / "r.dot").read_text() and (tmp_path / "r.onnx").stat().st_size > 0
    digits = _in(python, "-m", "archcompiler.training.digits", str(tmp_path / "digits"), cwd=tmp_path)
    assert digits.returncode == 0, digits.stderr
    trained = _in(python, "-m", "archcompiler", "train", str(RETRIEVAL), "--data", str(tmp_path / "digits"),
                  "--set", "dim=2", "--epochs", "1", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.slow
def test_without_the_plugin_a_spec_that_uses_it_fails_at_its_line_naming_the_package(tmp_path):
    python = _venv(tmp_path)
    assert _in(python, "-m", "archcompiler", "validate", str(RETRIEVAL)).returncode == 0
    removed = _in(python, "-m", "pip", "uninstall", "-y", "archc-gem-pool")
    assert removed.returncode == 0, removed.stderr
    result = _in(python, "-m", "archcompiler", "validate", str(RETRIEVAL))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = next(i for i, text in enumerate(RETRIEVAL.read_text().splitlines(), 1) if "op: gem_pool" in text)
    assert re.search(rf"{re.escape(str(RETRIEVAL))}:{line}:\d+: .*gem_pool", result.stderr), result.stderr
    assert "archc-gem-pool" in result.stderr
    listed = _in(python, "-m", "archcompiler", "ops", "--format", "json")
    assert "gem_pool" not in [e["op"] for e in json.loads(listed.stdout)]
