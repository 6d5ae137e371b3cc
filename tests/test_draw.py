"""Diagrams: golden DOT text, real rendering by `dot`, missing-binary behaviour, escaping.

The golden files are updated on purpose with:  ARCHC_UPDATE_GOLDEN=1 python -m pytest tests/test_draw.py
"""

from __future__ import annotations

import os
import shutil
import struct
import xml.etree.ElementTree as ET

import pytest
from conftest import GOLDEN, SPECS, run_archc

import archcompiler
from archcompiler import BackendError
from archcompiler.backends.dot import build_dot

PAPER = SPECS / "googlenet.yaml"
MODULES = ["inception_3a", "inception_3b", "inception_4a", "inception_4b", "inception_4c", "inception_4d",
           "inception_4e", "inception_5a", "inception_5b"]


@pytest.mark.parametrize("name, options", [
    ("googlenet.dot", {}),
    ("googlenet-collapsed.dot", {"collapse": True, "color": "flops"}),
])
def test_golden_dot(name, options):
    source = build_dot(archcompiler.load_spec(PAPER), **options).source
    golden = GOLDEN / name
    if os.environ.get("ARCHC_UPDATE_GOLDEN"):
        golden.write_text(source)
    assert source == golden.read_text(), f"DOT changed; if on purpose: ARCHC_UPDATE_GOLDEN=1 pytest {__file__}"


def test_dot_is_deterministic():
    spec = archcompiler.load_spec(PAPER)
    assert build_dot(spec).source == build_dot(archcompiler.load_spec(PAPER)).source


def test_expanded_view_groups_modules_and_marks_training_heads():
    source = build_dot(archcompiler.load_spec(PAPER)).source
    for module in MODULES:
        assert f"cluster_n_{module}" in source
    assert "#1x1 64  #3x3_reduce 96  #3x3 128  #5x5_reduce 16  #5x5 32  #pool_proj 32" in source
    assert "training only" in source and "dashed" in source
    assert 'label=" 28x28x256"' in source        # edge shapes, H x W x C as everywhere a person reads
    half = build_dot(archcompiler.load_spec(PAPER, {"width": 0.5})).source
    assert "#1x1 32  #3x3_reduce 48  #3x3 64  #5x5_reduce 8  #5x5 16  #pool_proj 16" in half   # built, not paper


def test_svg_renders_with_every_module_and_its_output_shape(tmp_path):
    out = tmp_path / "g.svg"
    result = archcompiler.draw(PAPER, out)
    assert result.rendered and result.path == out
    root = ET.parse(out).getroot()
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    shapes = archcompiler.analyze(PAPER)["rows"]
    by_name = {r["name"]: r for r in shapes}
    for module in MODULES:
        assert module in text
        c, h, w = by_name[module]["output"]
        assert f"{h}x{w}x{c}" in text


def test_png_has_a_sane_size(tmp_path):
    out = tmp_path / "g.png"
    assert run_archc("draw", str(PAPER), "--collapse", "-o", str(out)).returncode == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert 200 < width < 5000 and 500 < height < 10000


def test_default_output_is_spec_name_svg_in_the_current_folder(tmp_path):
    result = run_archc("draw", str(PAPER), cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "googlenet.svg").stat().st_size > 1000
    assert "wrote googlenet.svg" in result.stdout


def test_format_dot_needs_no_binary(tmp_path):
    out = tmp_path / "g.dot"
    result = run_archc("draw", str(PAPER), "-o", str(out), env={"PATH": "/nonexistent"})
    assert result.returncode == 0 and out.read_text().startswith("digraph")


def test_output_dash_prints_the_drawing_and_writes_no_file(tmp_path):
    """-o - is standard output, as in other command-line tools: for a pipe into dot or a viewer."""
    result = run_archc("draw", str(PAPER), "-o", "-", "--format", "dot", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("digraph googlenet")
    assert "wrote" not in result.stdout and list(tmp_path.iterdir()) == []
    if shutil.which("dot"):
        svg = run_archc("draw", str(PAPER), "-o", "-", cwd=tmp_path)      # SVG unless --format says otherwise
        assert svg.returncode == 0 and "inception_5b" in svg.stdout
        ET.fromstring(svg.stdout.encode())
        assert list(tmp_path.iterdir()) == []


def test_missing_dot_binary_says_how_to_install_and_writes_the_source(tmp_path):
    result = run_archc("draw", str(PAPER), "-o", str(tmp_path / "g.svg"), env={"PATH": "/nonexistent"})
    assert result.returncode == 1
    assert "apt-get install graphviz" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert not (tmp_path / "g.svg").exists()


def test_labels_are_escaped(tmp_path):
    text = ('name: quo\ndescription: \'a "quoted" \\\\ label\'\ninput: [3, 8, 8]\nlayers:\n'
            '  - {name: c, op: conv, out: 4, kernel: 3}\n')
    source = build_dot(archcompiler.load_spec(text)).source
    assert '\\"quoted\\"' in source and "\\\\\\\\" in source
    if shutil.which("dot"):
        archcompiler.draw(text, tmp_path / "q.svg")
        ET.parse(tmp_path / "q.svg")


def test_depth_and_rankdir(tmp_path):
    spec = archcompiler.load_spec(SPECS / "resnet18.yaml")
    collapsed = build_dot(spec, collapse=True).source
    assert "cluster_n_layer1_0" not in collapsed and "basic" in collapsed
    expanded = build_dot(spec, depth=1).source
    assert "cluster_n_layer1_0" in expanded
    assert "rankdir=LR" in build_dot(spec, rankdir="LR").source


@pytest.mark.slow
def test_draw_from_a_built_model(tmp_path):
    model = tmp_path / "m.pt"
    assert run_archc("build", str(SPECS / "googlenet-small.yaml"), "-o", str(model), "-q").returncode == 0
    out = tmp_path / "m.svg"
    result = run_archc("draw", str(model), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "inception_4e" in out.read_text()


def test_bad_output_extension():
    with pytest.raises(BackendError):
        archcompiler.draw(PAPER, "g.jpeg2000")


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_spec_draws(path, tmp_path):
    result = archcompiler.draw(path, tmp_path / "d.svg", archcompiler.DrawOptions(collapse="resnet" in path.name))
    assert result.rendered
    ET.parse(tmp_path / "d.svg")


@pytest.mark.parametrize("name, options", [
    ("googlenet.svg", {}),
    ("googlenet-collapsed.svg", {"collapse": True, "color": "flops"}),
])
def test_the_readmes_diagrams_are_what_archc_draws_today(name, options, tmp_path):
    """docs/*.svg, shown in the README, carry every label that `archc draw` writes today (the same
    text in the same order: shapes as H x W x C), whatever the layout coordinates of this graphviz."""
    from conftest import ROOT

    def texts(path):
        ns = "{http://www.w3.org/2000/svg}"
        return [t.text for t in ET.parse(path).getroot().iter(f"{ns}text")]

    today = tmp_path / name
    archcompiler.draw(PAPER, today, archcompiler.DrawOptions(**options))
    committed = ROOT / "docs" / name
    assert texts(committed) == texts(today), (
        f"regenerate it: archc draw specs/googlenet.yaml {'--collapse --color flops ' if options else ''}-o docs/{name}")
    assert "224x224x3" in texts(committed) and "3x224x224" not in texts(committed)


def test_a_collapsed_row_says_how_often_the_table_repeats_its_block():
    from archcompiler.backends.dot import build_dot

    pytest.importorskip("graphviz")
    source = build_dot(archcompiler.load_spec("resnet50"), collapse=True).source
    assert "conv2_x\\nbottleneck x3\\n" in source and "conv4_x\\nbottleneck x6\\n" in source
    assert "fc\\n" in source and " x1\\n" not in source
