"""Latency: the machine profile (archc calibrate), the torch-free prediction (flops --latency) and
the measurement per row (archc profile). How close prediction and measurement are is a benchmark
(benchmarks/latency.py), not a timed test; here the pieces are checked to work and to agree in
their shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, SPECS, run_archc

import archcompiler
from archcompiler import SpecError
from archcompiler.passes.latency import load_profile, unsteady


@pytest.fixture(scope="module")
def machine():
    """A fixed machine profile (the one archc ships), for what prediction does with a profile: a profile
    measured during the test would make these tests depend on how busy the machine is."""
    from archcompiler.passes.machine import shipped_profile_path

    return shipped_profile_path()


def calibrate_or_refuse(path) -> subprocess.CompletedProcess:
    """`archc calibrate --quick -o PATH` as a user runs it. On a busy machine (CI's cores are shared, the
    suite's other worker among them) calibrate may refuse, by design: its figures moved more than 3x or
    came out above the hardware's peak. Then once more with --force (a profile that only moved is written,
    marked); what is still refused is refused with its reason, and nothing is written."""
    result = run_archc("calibrate", "--quick", "-o", str(path))
    if result.returncode == 1:
        assert "no profile written" in result.stderr and not path.exists(), result.stderr
        result = run_archc("calibrate", "--quick", "--force", "-o", str(path))
    if result.returncode == 1:
        assert "no profile written" in result.stderr and "above what this machine can do" in result.stderr
        assert not path.exists() and "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A profile measured here by `archc calibrate --quick` (its numbers are this machine's, right now); on a
    machine too busy to measure, the refusal, and the profile archc ships for what reads a profile."""
    from archcompiler.passes.machine import shipped_profile_path

    path = tmp_path_factory.mktemp("machine") / "machine.json"
    result = calibrate_or_refuse(path)
    assert "measuring warm: conv3x3 (nhwc)" in result.stderr    # progress as it goes
    assert "measuring cold caches: conv3x3 (nhwc)" in result.stderr
    if result.returncode == 1:
        return None, shipped_profile_path()
    # a machine that moved while it was measured is told so
    assert ("warning: this machine's speed moved" in result.stderr) == (unsteady(json.loads(path.read_text())) is not None)
    return path, path


@pytest.mark.slow
def test_calibration_writes_a_machine_profile(calibrated):
    written, _ = calibrated
    if written is None:         # refused (see calibrate_or_refuse): nothing to read
        return
    profile = json.loads(written.read_text())
    assert profile["threads"] >= 1 and profile["bandwidth_bytes_per_s"] > 0 and profile["call_overhead_s"] > 0
    for kind in ("conv1x1", "conv3x3", "conv5x5", "conv7x7s2", "depthwise"):
        for layout in ("nchw", "nhwc"):
            assert profile["kernels"][f"{kind}/{layout}"]
    # each shape timed warm (column 5) and after the caches were flushed (column 6): never faster cold
    assert all(len(p) == 7 and p[4] > 0 and 0 < p[5] <= p[6] for points in profile["kernels"].values() for p in points)
    assert profile["cache_bytes"] > 0
    lo, hi = profile["speed_range"]             # the reference kernel's spread around its median
    assert profile["reference_s"] > 0 and 0 < lo <= 1 <= hi
    p10, p90 = profile["speed_percentiles"]      # and its 10th and 90th percentiles, inside that range
    assert lo <= p10 <= 1 <= p90 <= hi
    # every kind has its fixed cost (the statement at a minimal shape), never lower cold than warm. How it
    # compares with the measured shapes is a timing ratio, which a busy machine can upset: benchmarks/latency.py
    assert set(profile["fixed_s"]) == set(profile["fixed_cold_s"]) == set(profile["kernels"])
    for key in profile["kernels"]:
        assert 0 < profile["fixed_s"][key] <= profile["fixed_cold_s"][key], key


def test_the_calibration_grid_leaves_out_shapes_no_network_has():
    """The grid spans what GoogLeNet (full and reduced width), ResNet and VGG run, without the
    large-channel, large-map corners that would take most of the minute."""
    from archcompiler.measure.grid import LARGE_MAPS, MAX_MACS, MAX_MAP, conv_shapes

    for kind, k in (("conv1x1", 1), ("conv3x3", 3), ("conv5x5", 5)):
        shapes = conv_shapes(kind)
        assert (8, 8, 4) in shapes and (832, 384, 7) in shapes           # googlenet-small's and inception 5b's
        regular = [s for s in shapes if s not in LARGE_MAPS]
        assert all(ci * s * s <= MAX_MAP and ci * co * k * k * s * s <= MAX_MACS for ci, co, s in regular)
    assert (256, 256, 56) in conv_shapes("conv3x3")                         # VGG's, measured on purpose


def test_a_small_op_costs_its_fixed_cost_and_a_large_one_scales_with_its_work():
    """The lookup keeps each kind's fixed cost whole and scales only the rest of a neighbour's
    time by the ratio of work: a layer with a tenth of a measured shape's work does not take a
    tenth of its time."""
    from archcompiler.passes.latency import _lookup

    fixed = 20e-6
    points = [[1, 64, 64, 28, 1_000_000, 120e-6]]            # 20 us fixed + 100 us for 1M MACs
    assert _lookup(points, [1, 64, 64, 28], 1_000_000, fixed) == pytest.approx(120e-6)
    assert _lookup(points, [1, 64, 64, 28], 100_000, fixed) == pytest.approx(30e-6)
    assert _lookup(points, [1, 64, 64, 28], 10_000_000, fixed) == pytest.approx(1_020e-6)
    assert _lookup(points, [1, 64, 64, 28], 0, fixed) == pytest.approx(fixed)


def test_cold_times_as_recorded_never_under_the_warm_ones_and_long_kernels_pay_the_fixed_penalty():
    from archcompiler.measure.calibrate import _warm_cold

    assert _warm_cold(1.0, 1.8, 0.1) == (1.0, 1.8)      # the cache-miss cost of a small kernel
    assert _warm_cold(1.0, 0.8, 0.1) == (0.9, 0.9)      # flushing cannot make a kernel faster
    assert _warm_cold(5.0, None, 0.1) == (5.0, 5.1)     # a long kernel, timed warm only: its kind's fixed penalty


def test_a_network_that_fits_in_the_cache_runs_warm_and_one_that_does_not_runs_cold(machine):
    """The working set (weights and activations at the batch) against the cores' caches decides
    between the profile's warm and cold times: GoogLeNet at reduced width on 32x32 images fits in
    a few MB, the full GoogLeNet (7M weights, 28 MB) does not."""
    from archcompiler.passes import annotated_graph
    from archcompiler.passes.latency import coldness, load_profile, predict, working_set

    profile = load_profile(machine)
    small = annotated_graph(archcompiler.load_spec(SPECS / "googlenet-small.yaml"))
    full = annotated_graph(archcompiler.load_spec(SPECS / "googlenet.yaml"))
    assert 4 * 6_624_904 < working_set(full) < working_set(full, 8)      # weights (no auxiliary heads) + activations
    assert working_set(small) < 8 * 2**20 < working_set(full)
    for cache, small_cold, full_cold in ((4 * 2**20, (0.0, 0.5), (0.85, 1.0)), (2**40, (0, 0), (0, 0))):
        profile["cache_bytes"] = cache
        assert small_cold[0] <= coldness(small, profile) <= small_cold[1]
        assert full_cold[0] <= coldness(full, profile) <= full_cold[1]
    # with the cache as large as the network, prediction is the warm times alone; cold adds to it
    profile["cache_bytes"] = 2**40
    warm = sum(p["seconds"] for p in predict(full, profile).values())
    profile["cache_bytes"] = 1
    cold = sum(p["seconds"] for p in predict(full, profile).values())
    assert cold > warm


def test_an_older_machine_profile_is_refused_with_what_to_do(machine, tmp_path):
    from archcompiler.passes.latency import load_profile

    old = json.loads(machine.read_text())
    old["archc_machine_profile"] = 1
    del old["fixed_s"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    with pytest.raises(SpecError, match="older archc calibrate") as info:
        load_profile(path)
    assert "archc calibrate" in info.value.errors[0].hint


def test_latency_prediction_needs_no_torch(machine):
    code = ("import sys, json; from archcompiler.cli import main; "
            f"main(['flops', {str(SPECS / 'googlenet.yaml')!r}, '--latency', '--machine', {str(machine)!r}, "
            "'--format', 'json']); assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["latency"]["predicted_ms"] > 0
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["inception_4b"]["predicted_ms"] > 0 and rows["inception_4b"]["bound"] in ("compute", "memory")
    assert rows["conv1"]["intensity"] > rows["pool1"]["intensity"]          # a conv does more per byte than a pool
    assert abs(sum(r["predicted_ms"] for r in report["rows"]) - report["latency"]["predicted_ms"]) < 1e-6
    lat = report["latency"]                     # the working set holds at least GoogLeNet's weights (26.5 MB)
    assert lat["working_set_bytes"] > 4 * 6_624_904 and lat["cache_bytes"] > 0
    assert lat["cold"] == pytest.approx(max(0.0, 1 - lat["cache_bytes"] / lat["working_set_bytes"]), abs=1e-3)
    text = run_archc("flops", str(SPECS / "googlenet.yaml"), "--latency", "--machine", str(machine))
    assert text.returncode == 0 and "predicted latency:" in text.stdout and "kernels at " in text.stdout


def test_a_machine_that_moved_while_calibrated_gets_a_warning_wherever_its_profile_is_used(machine, tmp_path):
    """On a busy or shared machine the reference kernel's time spreads (1.8x between its 10th and
    90th percentiles on the VM of benchmarks/RESULTS.md): calibrate, flops --latency and the report
    say so, and that measured times can differ from the prediction by as much."""
    assert unsteady({"speed_percentiles": [0.95, 1.05]}) is None
    assert unsteady({}) is None                  # a profile from before the percentiles were kept
    warning = unsteady({"speed_percentiles": [0.72, 1.31]})
    assert "1.8x" in warning and "0.72x-1.31x" in warning and "archc calibrate again" in warning

    steady = run_archc("flops", str(SPECS / "googlenet.yaml"), "--latency", "--machine", str(machine), "--format", "json")
    profile = json.loads(machine.read_text())
    expected = unsteady(profile)                 # this machine's own quick calibration may have moved too
    assert json.loads(steady.stdout)["latency"]["calibration_warning"] == expected
    profile["speed_percentiles"] = [0.72, 1.31]
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(profile))
    text = run_archc("flops", str(SPECS / "googlenet.yaml"), "--latency", "--machine", str(moved))
    assert text.returncode == 0 and "warning: this machine's speed moved 1.8x" in text.stderr
    assert "warning" not in text.stdout           # the table and totals stay clean for a pipe
    page = tmp_path / "r.html"
    assert run_archc("report", str(SPECS / "googlenet-small.yaml"), "--machine", str(moved), "-o", str(page)).returncode == 0
    assert "speed moved 1.8x while it was calibrated" in page.read_text()


def test_latency_grows_with_the_batch(machine):
    """(How it compares between layouts needs a full calibration: benchmarks/latency.py.)"""
    from archcompiler.passes import annotated_graph
    from archcompiler.passes.latency import load_profile, predict_rows
    from archcompiler.passes.optimize import optimize

    profile = load_profile(machine)
    g = annotated_graph(archcompiler.load_spec(SPECS / "googlenet-torchvision.yaml"))
    for graph in (g, optimize(g)):
        one = sum(r["ms"] for r in predict_rows(graph, profile, 1).values())
        eight = sum(r["ms"] for r in predict_rows(graph, profile, 8).values())
        assert eight > 2 * one > 0


def test_a_missing_machine_profile_says_how_to_make_one(tmp_path):
    result = run_archc("flops", str(SPECS / "googlenet.yaml"), "--latency", "--machine", str(tmp_path / "none.json"))
    assert result.returncode == 1 and "archc calibrate" in result.stderr
    with pytest.raises(SpecError, match="not a machine profile"):
        bad = tmp_path / "bad.json"
        bad.write_text("[1, 2]")
        from archcompiler.passes.latency import load_profile
        load_profile(bad)


@pytest.mark.parametrize("optimize", [False, True])
@pytest.mark.slow
def test_profile_reports_each_row_predicted_and_measured(calibrated, optimize):
    args = ["profile", str(SPECS / "googlenet-small.yaml"), "--machine", str(calibrated[1]), "--repeats", "2",
            "--format", "json", *(["--optimize"] if optimize else [])]
    result = run_archc(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [r["name"] for r in report["rows"]]
    assert "inception_3a" in names and "conv1" in names
    assert all(r["predicted_ms"] >= 0 for r in report["rows"])
    measured = [r["measured_ms"] for r in report["rows"] if r["measured_ms"] is not None]
    assert len(measured) >= len(names) - 3 and all(m > 0 for m in measured)
    assert report["total"]["measured_ms"] > 0 and report["total"]["predicted_ms"] > 0
    assert report["machine_speed"] > 0          # the reference kernel, timed beside each run


@pytest.mark.parametrize("field, value", [
    (("kernels", "conv1x1/nchw", 0, 0), "a"),          # a feature that is not a number
    (("kernels", "conv3x3/nhwc", 0, 4), 0),            # zero work: the lookup divides by it
    (("kernels", "linear", 0), [1, 2, 3, 4, 5, 6]),    # a point of the wrong length (no cold time)
    (("cache_bytes",), 0),                             # coldness divides by it
    (("fixed_s", "relu/nchw"), -1.0),
    (("reference_s",), "fast"),
    (("speed_percentiles",), [0.9]),
])
def test_a_damaged_machine_profile_is_a_located_error_not_a_crash(machine, tmp_path, field, value):
    """A machine profile is a file anyone can hand archc (--machine FILE): bad numbers in it get a
    message naming the file and the field, and exit 1, never an internal error."""
    profile = json.loads(machine.read_text())
    target = profile
    for part in field[:-1]:
        target = target[part]
    target[field[-1]] = value
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(profile))
    result = run_archc("flops", str(SPECS / "googlenet.yaml"), "--latency", "--machine", str(path))
    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert str(path) in result.stderr and "not a valid machine profile" in result.stderr
    assert ".".join(str(part) for part in field) in result.stderr


def test_a_fresh_machine_predicts_with_the_shipped_profile_and_says_so(tmp_path):
    """No `archc calibrate` yet: flops --latency predicts with the rough profile archc ships, says so
    on stderr (and in the JSON), and never mentions a --machine the user did not pass."""
    from archcompiler.passes.machine import shipped_profile_path

    shipped = json.loads(shipped_profile_path().read_text())
    assert shipped["archc_default"] and load_profile(shipped_profile_path())["kernels"]
    fresh = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    text = run_archc("flops", str(SPECS / "googlenet-small.yaml"), "--latency", env=fresh)
    assert text.returncode == 0, text.stderr
    assert "predicted latency:" in text.stdout and "no profile of this machine yet" in text.stderr
    assert "archc calibrate" in text.stderr and "--machine" not in text.stderr
    data = run_archc("flops", str(SPECS / "googlenet-small.yaml"), "--latency", "--format", "json", env=fresh)
    assert "rough default profile" in json.loads(data.stdout)["latency"]["profile_note"]
    # once this machine has its own profile, that one is used, without the note
    own = tmp_path / "cache" / "archc" / "machine-cpu.json"
    own.parent.mkdir(parents=True)
    own.write_text(json.dumps({k: v for k, v in shipped.items() if k != "archc_default"}))
    text = run_archc("flops", str(SPECS / "googlenet-small.yaml"), "--latency", env=fresh)
    assert text.returncode == 0 and "no profile of this machine yet" not in text.stderr


def test_a_calibration_that_saw_the_machine_stall_still_warns_instead_of_dividing_by_zero():
    assert "moved" in unsteady({"speed_percentiles": [0.0, 1.5]})


def test_analyze_takes_the_profile_as_the_cli_does(tmp_path, monkeypatch):
    """archcompiler.analyze(latency=...) takes a profile's dict, a path to its file, or True for this
    machine's (here none is calibrated: the shipped one, with its note), like `archc flops --latency`;
    anything else is an error value naming the argument."""
    import archcompiler
    from archcompiler.passes.machine import shipped_profile_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))          # no profile of this machine
    assert {"matmul", "attention"} <= set(load_profile(shipped_profile_path())["kernels"])   # token models
    by_dict = archcompiler.analyze("resnet18", latency=load_profile(shipped_profile_path()))["latency"]
    by_path = archcompiler.analyze("resnet18", latency=str(shipped_profile_path()))["latency"]
    by_default = archcompiler.analyze("resnet18", latency=True)["latency"]
    assert by_dict["predicted_ms"] == by_path["predicted_ms"] == by_default["predicted_ms"] > 0
    assert by_default["profile_note"] and "latency" not in archcompiler.analyze("resnet18", latency=False)
    with pytest.raises(archcompiler.SpecError, match="latency must be a machine profile"):
        archcompiler.analyze("resnet18", latency=3)
