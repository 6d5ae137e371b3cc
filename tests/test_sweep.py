"""archc sweep: a grid of --set values, every combination a variant (an invalid one a row with its
located error), a table of params / MACs / memory / predicted latency, ranks and a Pareto plot; the
report of a sweep; --measure (interleaved timing) and --train (Optuna trials, slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SPECS

import archcompiler
from archcompiler import SpecError, SweepOptions, TrainOptions
from archcompiler.cli import main
from archcompiler.spec.limits import MAX_SWEEP_VARIANTS
from archcompiler.sweeps.grid import pareto_front, parse_grid, ranks, spearman, split_values, variants

MACHINE = str(ROOT / "archcompiler" / "data" / "machine-default-cpu.json")   # never the user's own profile
GOOGLENET = str(SPECS / "googlenet.yaml")
SMALL = str(SPECS / "googlenet-small.yaml")


def test_grid_values_split_at_commas_outside_brackets():
    assert split_values("0.5, 0.75,1.0") == ["0.5", "0.75", "1.0"]
    assert split_values("[3,96,96],[3,128,128]") == ["[3,96,96]", "[3,128,128]"]
    grid = parse_grid(["width=0.5,1.0", "num_classes=2,10,100"])
    assert grid == [("width", ["0.5", "1.0"]), ("num_classes", ["2", "10", "100"])]
    combos = variants(grid)
    assert len(combos) == 6 and combos[0] == {"width": "0.5", "num_classes": "2"}
    assert parse_grid({"width": [0.5, 1.0]}) == [("width", ["0.5", "1.0"])]


@pytest.mark.parametrize("grid, message, where", [
    (["width"], "a grid is PATH=V1,V2", "--grid width"),
    (["width="], "one or more values", "--grid width="),
    (["width=0.5,,1"], "none empty", "--grid width=0.5,,1"),
    (["width=0.5", "width=1.0"], "in the grid twice", "--grid width=1.0"),
    ([], "at least one --grid", "<unknown>"),
])
def test_a_bad_grid_is_refused_with_a_located_message(grid, message, where):
    with pytest.raises(SpecError) as exc:
        parse_grid(grid)
    d = exc.value.errors[0]
    assert message in d.message and d.file == where


def test_a_grid_larger_than_the_limit_is_refused_before_it_is_expanded():
    many = ",".join(str(i) for i in range(1, 1001))
    with pytest.raises(SpecError) as exc:
        archcompiler.sweep(GOOGLENET, ["width=0.5,1.0", f"num_classes={many}"], SweepOptions(machine=MACHINE))
    d = exc.value.errors[0]
    assert f"{2 * 1000:,} combinations" in d.message and f"{MAX_SWEEP_VARIANTS:,}" in d.message
    assert d.file.startswith("--grid num_classes=1,2,3") and d.path == "num_classes"


def test_ranks_spearman_and_the_pareto_front():
    assert ranks([3.0, 1.0, 2.0, 1.0]) == [4.0, 1.5, 3.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    points = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 3.5)]
    assert pareto_front(points) == [0, 1, 3]                    # cheaper and faster: none dominates them
    assert pareto_front([(1, 0.5), (2, 0.9), (3, 0.8)], maximize_y=True) == [0, 1]   # fast, or accurate


def test_every_variant_is_a_row_and_an_invalid_one_carries_its_located_error(tmp_path):
    result = archcompiler.sweep(GOOGLENET, ["width=0.5,1.0", "num_classes=10,abc"],
                                SweepOptions(machine=MACHINE, output=tmp_path / "out"))
    rows = result["rows"]
    assert [r["name"] for r in rows] == ["width=0.5 num_classes=10", "width=0.5 num_classes=abc",
                                        "width=1.0 num_classes=10", "width=1.0 num_classes=abc"]
    good, bad = [r for r in rows if r["ok"]], [r for r in rows if not r["ok"]]
    assert len(good) == 2 and len(bad) == 2
    assert bad[0]["errors"][0]["file"] == "--set num_classes=abc" and "abc" in bad[0]["errors"][0]["text"]
    # each valid row is what analyze says of that variant
    ref = archcompiler.analyze(GOOGLENET, ["width=0.5", "num_classes=10"], train_memory="sgd",
                               latency=json.loads(open(MACHINE).read()))
    assert good[0]["params"] == ref["total"]["params"] and good[0]["macs"] == ref["total"]["macs"]
    assert good[0]["peak_activation_bytes"] == ref["peak_activation_bytes"]
    assert good[0]["train_memory_bytes"] == ref["train_memory"]["peak"]
    assert good[0]["predicted_ms"] == pytest.approx(ref["latency"]["predicted_ms"])
    assert [r["predicted_rank"] for r in good] == [1, 2] and good[0]["pareto"] and not good[1]["pareto"]
    assert result["axes"] == {"x": "macs", "y": "predicted_ms", "maximize_y": False}
    # written: the table as JSON and the plot, nothing else (no temporary files left)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["pareto.png", "sweep.json"]
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "sweep.json").read_text())["rows"] == json.loads(json.dumps(rows))


def test_the_sweeps_own_set_applies_to_every_variant_and_batch_scales_macs():
    one = archcompiler.sweep(GOOGLENET, ["width=0.5"], SweepOptions(machine=MACHINE),
                             overrides=["num_classes=10"])["rows"][0]
    eight = archcompiler.sweep(GOOGLENET, ["width=0.5"], SweepOptions(batch=8, machine=MACHINE),
                               overrides=["num_classes=10"])["rows"][0]
    assert eight["macs"] == 8 * one["macs"] and eight["params"] == one["params"]
    assert eight["predicted_ms"] > one["predicted_ms"]
    optimized = archcompiler.sweep(GOOGLENET, ["width=0.5"], SweepOptions(optimize=True, machine=MACHINE),
                                   overrides=["num_classes=10"])
    assert optimized["optimize"] and optimized["rows"][0]["ok"]
    with pytest.raises(SpecError):            # a bad --set of the sweep itself is an error, not N bad rows
        archcompiler.sweep(GOOGLENET, ["width=0.5"], SweepOptions(machine=MACHINE), overrides=["num_classes=abc"])


def test_the_cli_prints_each_format_and_the_front(tmp_path, capsys):
    base = ["sweep", GOOGLENET, "--grid", "width=0.5,1.0", "--grid", "num_classes=10,abc", "--machine", MACHINE]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "predicted ms" in text and "2 of 4 variants valid" in text
    assert "Pareto front (predicted_ms against macs): width=0.5 num_classes=10" in text
    assert "--set num_classes=abc: params.num_classes" in text
    assert main([*base, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("variant,params,MACs,") and lines[0].endswith(",error") and len(lines) == 5
    assert main([*base, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 4
    assert main([*base, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| variant | params |")
    assert main(["sweep", GOOGLENET, "--grid", "width=0.5,0.5", "--grid", "width=1", "--machine", MACHINE]) == 1
    assert "'width' is in the grid twice" in capsys.readouterr().err
    assert main(["sweep", GOOGLENET, "--grid", "nope=1,2", "--machine", MACHINE]) == 1   # no valid variant


def test_a_sweep_without_measure_never_imports_torch(tmp_path):
    code = (f"import sys, archcompiler; r = archcompiler.sweep({GOOGLENET!r}, ['width=0.5,1.0'], "
            f"archcompiler.SweepOptions(machine={MACHINE!r}, output={str(tmp_path)!r})); assert r['rows'][0]['ok']; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'optuna')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_report_shows_a_sweep(tmp_path, capsys):
    archcompiler.sweep(GOOGLENET, ["width=0.5,1.0", "num_classes=10,abc"], SweepOptions(machine=MACHINE,
                                                                                        output=tmp_path / "s"))
    assert main(["report", "--sweep", str(tmp_path / "s"), "-o", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "archc sweep of googlenet" in page and "data:image/png;base64," in page
    assert "width=0.5 num_classes=10" in page and "--set num_classes=abc" in page
    assert main(["report", str(tmp_path / "s" / "sweep.json")]) == 0          # the JSON itself, default name
    assert (tmp_path / "s" / "sweep-report.html").exists()
    (tmp_path / "other.json").write_text("{}")
    capsys.readouterr()
    assert main(["report", "--sweep", str(tmp_path / "other.json"), "-o", str(tmp_path / "x.html")]) == 1
    assert "is not a sweep written by archc sweep" in capsys.readouterr().err
    assert main(["report", "--sweep", str(tmp_path / "none")]) == 1


@pytest.mark.slow
def test_measure_times_every_variant_in_interleaved_rounds():
    result = archcompiler.sweep(SMALL, ["width=0.125,0.25"], SweepOptions(measure=True, rounds=2, machine=MACHINE),
                                overrides=["num_classes=2"])
    rows = result["rows"]
    assert all(r["ok"] and r["measured_ms"] > 0 for r in rows)
    assert sorted(r["measured_rank"] for r in rows) == [1, 2] and result["rounds"] == 2
    assert result["axes"]["y"] == "measured_ms"


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory):
    """48 images of the digits 0 and 1 (a few seconds of training per variant)."""
    import shutil

    from archcompiler.training.digits import write_digits

    every = tmp_path_factory.mktemp("data") / "digits"
    write_digits(every)
    folder = tmp_path_factory.mktemp("data") / "few"
    for digit in ("0", "1"):
        (folder / digit).mkdir(parents=True)
        for n in range(24):
            shutil.copy(every / digit / f"{n}.png", folder / digit / f"{n}.png")
    return folder


@pytest.mark.slow
def test_train_makes_every_variant_an_optuna_trial_records_a_failure_and_resumes(few_digits, tmp_path, monkeypatch):
    import optuna

    import archcompiler.training.loop as loop

    real = loop.train

    def train(spec, data, options, overrides):
        if "width=0.25" in overrides:
            raise RuntimeError("this variant fails")
        return real(spec, data, options, overrides=overrides)

    monkeypatch.setattr(loop, "train", train)
    grid = ["width=0.125,0.25", "train.batch_size=16,abc"]
    out = tmp_path / "sweep"
    result = archcompiler.sweep(SMALL, grid, SweepOptions(output=out, machine=MACHINE), overrides=["num_classes=2"],
                                training=TrainOptions(epochs=1, workers=0, seed=0), data=few_digits)
    rows = {r["name"]: r for r in result["rows"]}
    good, bad = rows["width=0.125 train.batch_size=16"], rows["width=0.25 train.batch_size=16"]
    assert good["trial_state"] == "COMPLETE" and 0 <= good["accuracy"] <= 1
    assert bad["trial_state"] == "FAIL" and bad["accuracy"] is None and "this variant fails" in bad["train_error"]
    assert "trial" not in rows["width=0.125 train.batch_size=abc"]          # invalid: never a trial
    assert result["axes"] == {"x": "predicted_ms", "y": "accuracy", "maximize_y": True}
    assert {p.name for p in out.iterdir()} >= {"sweep.db", "sweep.json", "pareto.png", "trials"}
    # the sweep resumes: finished trials (completed or failed) are read from the study, not run again
    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("a finished trial ran again"))
    again = archcompiler.sweep(SMALL, grid, SweepOptions(output=out, machine=MACHINE), overrides=["num_classes=2"],
                               training=TrainOptions(epochs=1, workers=0, seed=0), data=few_digits)
    assert {r["name"]: r.get("accuracy") for r in again["rows"]} == {n: r.get("accuracy") for n, r in rows.items()}
    study = optuna.load_study(study_name="archc-sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    assert len(study.trials) == 2


def test_train_needs_data_and_a_folder():
    with pytest.raises(SpecError, match="needs the images"):
        archcompiler.sweep(SMALL, ["width=0.125"], SweepOptions(machine=MACHINE), training=TrainOptions())
