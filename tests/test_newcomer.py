"""Issue #31, a newcomer's report: a mistyped spec path gets a "did you mean", an input too small says
which is the smallest that works, a sweep's plot names every variant (those with equal cost too), and
`archc validate` compares the output sizes the paper claims."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, SPECS, run_archc

import archcompiler
from archcompiler import GraphError
from archcompiler.ir import lower
from archcompiler.passes import infer_shapes
from archcompiler.passes.shapes import SEARCH_TRIES, smallest_input

MACHINE = str(ROOT / "archcompiler" / "data" / "machine-default-cpu.json")   # never the user's own profile
GOOGLENET = str(SPECS / "googlenet.yaml")


# ----------------------------------------------------------------------------- 1. a mistyped path

def test_a_mistyped_spec_path_suggests_the_closest_file_in_its_folder():
    for typed in ("specs/googlenet.yml", "specs/googlenett.yaml"):
        done = run_archc("flops", typed)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert f"no such spec file: {typed} (did you mean specs/googlenet.yaml?)" in done.stderr, done.stderr


def test_a_missing_file_here_or_in_a_missing_folder(tmp_path):
    shutil.copy(SPECS / "vgg16.yaml", tmp_path / "mynet.yaml")
    done = run_archc("validate", "mynett.yml", cwd=tmp_path)
    assert done.returncode == 1 and "(did you mean mynet.yaml?)" in done.stderr, done.stderr
    done = run_archc("validate", "mynet", cwd=tmp_path)         # the suffix left out: the file, not a zoo name
    assert done.returncode == 1 and "did you mean mynet.yaml?" in done.stderr, done.stderr
    done = run_archc("validate", "googlenet.yml", cwd=tmp_path)     # no such file here: the shipped spec
    assert done.returncode == 1 and "did you mean 'googlenet', a shipped spec?" in done.stderr, done.stderr
    done = run_archc("validate", "nowhere/x.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "there is no folder nowhere" in done.stderr, done.stderr
    done = run_archc("validate", "zzqqxx.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "(check the path)" in done.stderr, done.stderr


# ----------------------------------------------------------------------------- 2. an input too small

def test_an_input_too_small_says_the_smallest_that_works():
    done = run_archc("flops", GOOGLENET, "--set", "input=[3,32,32]")
    assert done.returncode == 1 and "output would be" in done.stderr
    hint = "the smallest square input this network takes is 193x193x3: --set input=[3,193,193]"
    assert done.stderr.count(hint) == 1, done.stderr            # on the first of the errors, not on each
    # and it is right: 193 works, 192 does not
    assert run_archc("validate", GOOGLENET, "--set", "input=[3,193,193]").returncode == 0
    assert "output would be" in run_archc("validate", GOOGLENET, "--set", "input=[3,192,192]").stderr


def test_the_search_is_bounded_and_never_raises(monkeypatch):
    from archcompiler.passes import shapes

    passes = []
    fits = shapes._fits
    monkeypatch.setattr(shapes, "_fits", lambda g, shape: passes.append(shape) or fits(g, shape))
    spec = archcompiler.load_spec(GOOGLENET, ["input=[3,1,1]"])
    g = lower(spec)
    with pytest.raises(GraphError) as caught:
        infer_shapes(g)
    assert 0 < len(passes) <= SEARCH_TRIES              # shape passes counted, not timed
    assert "193x193x3" in caught.value.errors[0].hint
    assert SEARCH_TRIES <= 20
    assert smallest_input(lower(archcompiler.load_spec(GOOGLENET, ["input=[3,32,32]"]))) == ((3, 193, 193), True)
    # no image input, or a graph the search cannot read: no hint, and no error of its own
    g = lower(spec)
    g.nodes["input"]["attrs"] = {"shape": (8,)}
    assert smallest_input(g) is None
    g = lower(spec)
    g.nodes["conv1"]["attrs"] = {}
    assert smallest_input(g) is None


# ----------------------------------------------------------------------------- 3. the sweep's plot

def _labels(result) -> list[str]:
    import matplotlib.pyplot as plt

    from archcompiler.sweeps.page import pareto_figure

    fig = pareto_figure(result)
    try:
        return [t.get_text() for t in fig.axes[0].texts]
    finally:
        plt.close(fig)


def test_the_plot_names_every_variant_of_equal_cost():
    # the class count changes only the classifier: each width's two variants cost the same to a pixel
    result = archcompiler.sweep(GOOGLENET, ["width=0.5,0.75,1.0", "num_classes=10,1000"],
                                archcompiler.SweepOptions(machine=MACHINE))
    assert len(result["rows"]) == 6 and all(r["ok"] for r in result["rows"])
    assert sorted(_labels(result)) == ["width=0.5 (num_classes=10, 1000)", "width=0.75 (num_classes=10, 1000)",
                                       "width=1.0 (num_classes=10, 1000)"]


def test_variants_at_one_point_that_differ_in_several_settings_are_listed_one_a_line():
    rows = [{"name": f"a={a} b={b}", "sets": {"a": a, "b": b}, "ok": True, "pareto": i == 0, "macs": 100, "predicted_ms": 1.0}
            for i, (a, b) in enumerate([("1", "x"), ("2", "y")])]
    rows.append({"name": "a=3 b=z", "sets": {"a": "3", "b": "z"}, "ok": True, "pareto": False, "macs": 400,
                 "predicted_ms": 3.0})
    result = {"rows": rows, "axes": {"x": "macs", "y": "predicted_ms"}, "spec": "t", "batch": 1, "optimize": False}
    assert sorted(_labels(result)) == ["a=1 b=x\na=2 b=y", "a=3 b=z"]


def test_the_cli_writes_the_plot(tmp_path):
    done = run_archc("sweep", GOOGLENET, "--grid", "width=0.5,1.0", "--grid", "num_classes=10,1000",
                     "--machine", MACHINE, "-o", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- 4. validate and the claims

def test_validate_fails_where_the_table_contradicts_the_claimed_output(tmp_path):
    text = (SPECS / "googlenet.yaml").read_text()
    assert text.count("28x28x256") == 1
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("28x28x256", "28x28x255"))
    line = next(i for i, li in enumerate(wrong.read_text().splitlines(), 1) if "28x28x255" in li)
    done = run_archc("validate", str(wrong))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{wrong}:{line}:" in done.stderr                    # at the row that makes the claim
    assert "inception_3a: output size: the paper says 28x28x255, the spec computes 28x28x256" in done.stderr
    data = json.loads(run_archc("validate", str(wrong), "--format", "json").stdout)
    assert data[0]["valid"] is False and data[0]["errors"][0]["line"] == line


def test_validate_says_which_claims_it_compared():
    done = run_archc("validate", GOOGLENET)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("; 19 claimed output sizes match (archc check compares params and ops too)")
    # a --set variant is not the network the paper describes: not compared, and said so
    done = run_archc("validate", GOOGLENET, "--set", "num_classes=10")
    assert done.returncode == 0, done.stderr
    assert "19 claimed output sizes not compared under --set" in done.stdout
    done = run_archc("validate", str(SPECS / "alexnet.yaml"))      # no claims: nothing said of them
    assert done.returncode == 0 and "claim" not in done.stdout


def test_validate_compares_output_sizes_as_check_does():
    from archcompiler.passes.claims import check_output_claims

    for overrides in (["num_classes=10"], ["input=[3,256,256]"]):
        spec = archcompiler.load_spec(GOOGLENET, overrides)
        from_check = [d.format() for d in archcompiler.check(spec) if d.severity == "error"]
        assert from_check and [d.format() for d in check_output_claims(spec, infer_shapes(lower(spec)))] == from_check
