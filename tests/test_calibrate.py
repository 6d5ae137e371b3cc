"""archc calibrate on a busy machine (issue #31): a measurement above what the hardware can do is taken
again and then refused, a calibration whose speed moved too much is not written (unless --force, which
marks it), and archc profile's totals are the sums of the rows it shows. The bounds are checked on
injected CPU facts and injected measurements (deterministic); one test calibrates for real beside
processes that keep every core busy."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT

import archcompiler.measure.calibrate as cal
import archcompiler.measure.peak as bounds
from archcompiler.cli import main
from archcompiler.passes.machine import MOVED_LIMIT, is_compute, shipped_profile_path, speed_moved

TINY = ("name: tiny\ninput: [3, 32, 32]\nlayers:\n"
        "  - {name: conv1, op: conv, out: 16, kernel: 3, padding: 1}\n"
        "  - {name: pool1, op: max_pool, kernel: 2, stride: 2}\n"
        "  - {name: gap, op: global_avg_pool}\n"
        "  - {name: fc, op: linear, out: 10}\n")


# --- the peak, from injected CPU facts ----------------------------------------------------------------

def test_the_peak_is_cores_times_clock_times_flops_per_cycle():
    margin = bounds.CLOCK_MARGIN * 1e6
    # AVX-512: 16 fp32 lanes, x 2 (an FMA) x 2 FMA units = 64 FLOPs per cycle per core
    assert bounds.peak_flops_bound(2, 2600, {"fpu", "avx2", "fma", "avx512f"}) == 2 * 2600 * margin * 64
    assert bounds.peak_flops_bound(4, 3000, {"avx", "avx2", "fma"}) == 4 * 3000 * margin * 32
    assert bounds.peak_flops_bound(1, 2000, {"sse", "sse2"}) == 2000 * margin * 16
    assert bounds.peak_flops_bound(8, 3200, {"fp", "asimd"}) == 8 * 3200 * margin * 16        # Arm NEON: 4 lanes
    assert bounds.peak_flops_bound(2, 2600, {"avx512f"}, margin=2.0) == 2 * 2600e6 * 2.0 * 64
    # a clock the system states as its maximum gets a 1.5x margin; a VM's nominal "cpu MHz" 2x
    assert bounds.clock_margin("cpuinfo_max_freq") == bounds.clock_margin("lscpu") == bounds.CLOCK_MARGIN == 1.5
    assert bounds.clock_margin("cpu MHz") == bounds.NOMINAL_CLOCK_MARGIN == 2.0
    # nothing known: the widest vector unit and 5 GHz, so that the bound stays an upper bound
    assert bounds.peak_flops_bound(2, None, set()) == 2 * bounds.FALLBACK_MHZ * 1e6 * 64
    # the 2-core machine: its figures were far above any such bound
    peak = bounds.peak_flops_bound(2, 2600, {"avx512f"})
    assert peak / 1e9 < 13164.0 / 10 and peak / 1e9 < 31373.1 / 10


def test_cpu_facts_are_read_from_cpufreq_then_lscpu_then_cpuinfo():
    cpuinfo = ("processor\t: 0\ncpu MHz\t\t: 2600.000\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n\n"
               "processor\t: 1\ncpu MHz\t\t: 2900.000\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    lscpu = "Model name:  Some CPU\nCPU max MHz:                     4200.0000\nCPU min MHz: 800.0000\n"
    facts = bounds.parse_cpu_facts(2, "3500000\n", lscpu, cpuinfo)           # cpuinfo_max_freq is in kHz
    assert (facts.cores, facts.mhz, facts.clock_source) == (2, 3500.0, "cpuinfo_max_freq")
    assert {"avx512f", "fma"} <= facts.flags
    assert bounds.parse_cpu_facts(2, None, lscpu, cpuinfo).mhz == 4200.0
    facts = bounds.parse_cpu_facts(2, None, None, cpuinfo)                    # a VM: no cpufreq; the highest cpu MHz
    assert (facts.mhz, facts.clock_source) == (2900.0, "cpu MHz")
    arm = bounds.parse_cpu_facts(4, None, None, "processor\t: 0\nFeatures\t: fp asimd evtstrm\n")
    assert arm.mhz is None and "asimd" in arm.flags and bounds.simd_lanes(arm.flags) == 4
    nothing = bounds.parse_cpu_facts(0, "garbage", "", "")
    assert nothing.cores == 1 and nothing.mhz is None and not nothing.flags
    # this machine's own facts give a bound
    import torch

    peak = bounds.machine_peak(torch.device("cpu"))
    assert peak.flops_per_s > 1e9 and "FLOPs per cycle" in peak.basis


# --- injected measurements: retaken, refused, or written marked -------------------------------------------

@pytest.fixture
def fake(monkeypatch):
    """calibrate without timing anything: every kernel takes ``state.kernel_s`` and the reference
    kernel the times of ``state.reference`` in turn (the last one repeated)."""
    state = type("State", (), {})()
    state.kernel_s, state.reference, state.calls, state.samples = 1e-3, [1e-3], 0, 0

    def timer(fn, repeats=5, budget=0.1, before=None):
        state.calls += 1
        return state.kernel_s

    def reference(self, runs=3):
        seconds = state.reference[min(state.samples, len(state.reference) - 1)]
        state.samples += 1
        self.samples.append(seconds)
        return seconds
    monkeypatch.setattr(cal, "_timer", timer)
    monkeypatch.setattr(cal.Reference, "__call__", reference)
    return state


def small_grid(monkeypatch, works):
    """Replace the grid by one kind, conv3x3/nchw: its fixed cost, then a shape of each of ``works``
    (multiply-adds), in that order, each timed once per pass."""
    def measure(dev, timed, quick, say):
        fixed = {"conv3x3/nchw": timed(lambda: None, 2 * 288, "the fixed shape")}
        points = [[1, 64, 64, 28, w, timed(lambda: None, 2 * w, f"shape {i}")] for i, w in enumerate(works)]
        return {"conv3x3/nchw": points}, fixed
    monkeypatch.setattr(cal, "measure_grid", measure)


NO_BANDWIDTH_BOUND = math.inf


def test_a_figure_above_the_peak_is_measured_again(fake, monkeypatch):
    """A reference run that a stall made 1,000x slower makes the kernel timed after it look 1,000x
    faster (the issue's 31,373 GFLOP/s): that measurement is taken again, reference and all."""
    small_grid(monkeypatch, [1000] * 5 + [5e8])            # the last: 1e9 FLOPs in 1 ms, 1e12 FLOP/s
    fake.reference = [1e-3] * 6 + [1.0] + [1e-3]             # the 7th reference run (the big shape's) stalled
    profile = cal.calibrate(peak=cal.Peak(1e13, NO_BANDWIDTH_BOUND, "injected"))
    assert profile["retaken"] == 1
    assert all(2 * p[4] / p[5] <= 1e13 for p in profile["kernels"]["conv3x3/nchw"])
    assert profile["kernels"]["conv3x3/nchw"][-1][5] == pytest.approx(1e-3)
    assert profile["peak"]["flops_per_s"] == 1e13


def test_a_figure_that_stays_above_the_peak_is_refused(fake, monkeypatch):
    small_grid(monkeypatch, [1000] * 5 + [5e8])
    fake.reference = [1e-3] * 6 + [1.0] * cal.MAX_TRIES + [1e-3]      # stalled at each try
    with pytest.raises(cal.CalibrationRefused) as info:
        cal.calibrate(peak=cal.Peak(1e13, NO_BANDWIDTH_BOUND, "2 cores x 3.9 GHz x 64 FLOPs per cycle"))
    assert fake.calls == 6 + cal.MAX_TRIES                  # measured MAX_TRIES times, then nothing more
    message = str(info.value)
    assert (f"no profile written: shape 5 measured above what this machine can do in each of {cal.MAX_TRIES} tries "
            "(the last at 1000000.0 GFLOP/s; the bound: 10000.0 GFLOP/s, 2 cores x 3.9 GHz x 64 FLOPs per cycle); "
            "the machine was busy") in message
    assert "--force does not write" in message


def test_a_figure_above_the_peak_at_the_whole_calibrations_speed_is_refused(fake, monkeypatch):
    """Each measurement is checked at the machine's typical speed so far; the profile holds them at its
    typical speed over the whole calibration, and is checked again at that speed."""
    small_grid(monkeypatch, [5e8] + [1000] * 10)
    fake.reference = [1e-2] * 2 + [1e-3]                    # slow while the big shape was measured, then fast
    with pytest.raises(cal.CalibrationRefused, match="at the typical speed of the whole calibration"):
        cal.calibrate(peak=cal.Peak(5e12, NO_BANDWIDTH_BOUND, "injected"))


def test_a_read_bandwidth_above_its_bound_is_refused(fake, monkeypatch):
    small_grid(monkeypatch, [1000])
    with pytest.raises(cal.CalibrationRefused, match=r"the memory bandwidth \(read\) measured above what this machine "
                       r"can do in each of 3 tries \(the last at 16.8 GB/s; the bound: 1.0 GB/s, 2x the fastest read"):
        cal.calibrate(quick=True, peak=cal.Peak(1e18, 1e9, "injected"))     # 16 MiB in 1 ms: 16.8 GB/s
    assert cal.read_bound(lambda: None, 1000, lambda: None) > 0             # the bound itself: measured


@pytest.fixture
def moved_profile(fake, monkeypatch):
    """A profile calibrated (the --quick grid, nothing timed) on a machine whose reference kernel took
    1 ms and 10 ms in turn: its speed moved 10x. ``fake.seen``: (operations, label) of each measurement."""
    fake.reference = [1e-3, 1e-2] * 1000
    fake.seen = []
    measure = cal.measure_grid

    def spy(dev, timed, quick, say):
        def timed_spy(fn, ops, label):
            fake.seen.append((ops, label))
            return timed(fn, ops, label)
        return measure(dev, timed_spy, quick, say)
    monkeypatch.setattr(cal, "measure_grid", spy)
    monkeypatch.setattr(cal, "machine_peak", lambda device: cal.Peak(1e18, None, "injected"))
    monkeypatch.setattr(cal, "read_bound", lambda read, nbytes, sync, runs=5: math.inf)
    profile = cal.calibrate(quick=True)
    assert speed_moved(profile) == pytest.approx(10, rel=0.01) and speed_moved(profile) > MOVED_LIMIT
    assert profile["retaken"] == 0
    return profile


def test_a_calibration_whose_speed_moved_too_much_is_not_written_without_force(moved_profile, monkeypatch, tmp_path,
                                                                               capsys):
    monkeypatch.setattr(cal, "calibrate", lambda *args, **kwargs: copy.deepcopy(moved_profile))
    out = tmp_path / "machine.json"
    assert main(["calibrate", "--quick", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no profile written: the machine was busy while it was measured: its speed moved 10.0x" in err
    assert f"more than the {MOVED_LIMIT:g}x a profile may move" in err and "--force" in err
    assert not out.exists()

    assert main(["calibrate", "--quick", "-o", str(out), "--force"]) == 0
    captured = capsys.readouterr()
    written = json.loads(out.read_text())
    assert written["unsteady"] == {"moved": 10.0, "limit": MOVED_LIMIT}
    assert "marked as unsteady" in captured.out
    assert "speed moved 10.0x" in captured.err and "wrote it only because of --force" in captured.err

    # archc profile says so, in one line (its figures are nonsense: nothing was timed)
    assert main(["profile", TINY, "--machine", str(out), "--repeats", "1"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "--force" in line]
    assert len(lines) == 1 and "moved 10x" in lines[0] and "refuses more than 3x" in lines[0]


def test_the_quick_grid_passes_each_kernel_its_operations(moved_profile, fake):
    """(What the bound is checked on: the FLOPs of a compute kernel, the element operations of the others.)"""
    ops = {label: n for n, label in fake.seen}
    assert ops["conv3x3/nchw 64->64 on 28x28, batch 8"] == 2 * 8 * 64 * 64 * 9 * 28 * 28
    assert ops["conv7x7s2/nhwc 3->64 on 112x112, batch 1"] == 2 * 64 * 56 * 56 * 3 * 49
    assert ops["relu/nhwc 64 channels on 56x56, batch 1"] == 64 * 56 * 56
    assert ops["linear 1024->1000, batch 32"] == 2 * 32 * 1024 * 1000
    for key, points in moved_profile["kernels"].items():        # and the profile's work column agrees
        for p in points:
            assert (2 if is_compute(key) else 1) * p[4] in ops.values(), key


# --- a real calibration beside processes that keep every core busy ----------------------------------------

def test_calibrate_beside_busy_cores_writes_possible_figures_or_refuses(tmp_path):
    """The issue's machine: every core busy with another process, and calibrate's own threads, one per
    core. Calibrate runs in a fresh process, as the CLI does, on a reduced --quick grid (3x3 and 7x7/2
    convolutions, a linear layer, ReLU: the reduction changes the test's time, not what is checked),
    the busy processes started once it has imported torch. Either every figure it writes is below this
    machine's peak, or it writes nothing and says why."""
    cores = min(len(os.sched_getaffinity(0)), 4)
    out = tmp_path / "machine.json"
    code = (
        "import sys\n"
        "import archcompiler.measure.grid as c\n"
        "c.CONVS = {k: c.CONVS[k] for k in ('conv3x3', 'conv7x7s2')}\n"
        "c.QUICK = {(64, 64, 28), (3, 64, 112)}\n"
        "c.LINEARS, c.MATMULS, c.ATTENTIONS = c.LINEARS[1:2], [], []\n"
        "c.ELEMENTWISE_OPS = {'relu': c.ELEMENTWISE_OPS['relu']}\n"
        "c.QUICK_SIZES = [(64, 56)]\n"
        "from archcompiler.cli import main\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        f"sys.exit(main(['calibrate', '--quick', '-o', {str(out)!r}]))\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": str(cores), "MKL_NUM_THREADS": str(cores)})
    busy: list[subprocess.Popen] = []
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()[-2000:]
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
        child.stdin.write("go\n")
        child.stdin.flush()
        stdout, stderr = child.communicate(timeout=240)
    finally:
        for p in busy:
            p.kill()
            p.wait()
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode == 1:
        assert "no profile written" in stderr and "busy" in stderr, stderr[-2000:]
        assert not out.exists()
        return
    assert child.returncode == 0, stderr[-2000:]
    profile = json.loads(out.read_text())
    import torch

    peak = bounds.machine_peak(torch.device("cpu")).flops_per_s
    assert profile["peak"]["flops_per_s"] == peak
    for key, points in profile["kernels"].items():
        for p in points:
            assert (2 if is_compute(key) else 1) * p[4] / min(p[5], p[6]) <= peak, (key, p)
    assert profile["bandwidth_bytes_per_s"] <= profile["peak"]["bytes_per_s"]
    assert speed_moved(profile) <= MOVED_LIMIT


# --- archc profile: totals are the sums of the rows shown ----------------------------------------------------

def test_profile_totals_are_the_sums_of_the_rows_shown():
    from archcompiler.api import profile

    report = profile(TINY, repeats=2, machine=shipped_profile_path())
    rows, total = report["rows"], report["total"]
    assert [r["name"] for r in rows] == ["conv1", "pool1", "gap", "fc"]
    assert total["predicted_ms"] == pytest.approx(sum(r["predicted_ms"] for r in rows))
    assert total["measured_ms"] == pytest.approx(sum(r["measured_ms"] for r in rows))
    assert total["whole_call_ms"] > 0 and total["repeats"] == 2


def fake_report(speed, predicted, measured, whole):
    return {"spec": "tiny", "batch": 1, "device": "cpu", "optimized": False, "machine": "M",
            "rows": [{"name": "a", "predicted_ms": predicted, "measured_ms": measured, "intensity": 1.0,
                      "bound": "memory"}],
            "total": {"predicted_ms": predicted, "measured_ms": measured, "whole_call_ms": whole, "repeats": 10},
            "machine_speed": speed, "machine_unsteady": None}


@pytest.mark.parametrize("speed, predicted, measured, note", [
    (1.5, 10.0, 5.0, "busier when calibrated than now, which makes measured times shorter than predicted"),
    (0.5, 5.0, 10.0, "other load on it now makes measured times longer than predicted"),
    (1.5, 5.0, 10.0, None),          # faster now, yet measured longer: not the load's doing, no note
    (0.5, 143.991, 0.183, None),     # the conv1: slower now, yet measured 800x shorter
    (1.05, 5.0, 10.0, None),         # the same speed
])
def test_the_note_about_load_matches_the_direction_of_the_figures(speed, predicted, measured, note, monkeypatch,
                                                                  capsys):
    import archcompiler.api

    monkeypatch.setattr(archcompiler.api, "profile", lambda *args, **kwargs: fake_report(speed, predicted, measured,
                                                                                       measured))
    assert main(["profile", TINY]) == 0
    captured = capsys.readouterr()
    assert f"predicted {predicted:.2f} ms, measured {measured:.2f} ms" in captured.out
    if note is None:
        assert "the speed it had when calibrated" not in captured.err
    else:
        assert note in captured.err and f"{speed:.2f}x the speed" in captured.err


def test_a_whole_call_apart_from_the_rows_sum_is_explained(monkeypatch, capsys):
    """The issue's run: rows summing to 6.5 ms, the forward pass timed as one call at 365.45 ms."""
    import archcompiler.api

    monkeypatch.setattr(archcompiler.api, "profile", lambda *args, **kwargs: fake_report(1.0, 7.0, 6.5, 365.45))
    assert main(["profile", TINY]) == 0
    captured = capsys.readouterr()
    assert "measured 6.50 ms (1.08x) (the rows summed)" in captured.out and "365.45" not in captured.out
    assert ("the whole forward pass, timed as one call without the marks: 365.45 ms; the rows sum to 6.50 ms: "
            "each row's time is its median over 10 runs") in captured.err
    monkeypatch.setattr(archcompiler.api, "profile", lambda *args, **kwargs: fake_report(1.0, 7.0, 6.5, 6.9))
    assert main(["profile", TINY]) == 0
    assert "whole forward pass" not in capsys.readouterr().err          # close enough: nothing to explain
    monkeypatch.setattr(archcompiler.api, "profile", lambda *args, **kwargs: fake_report(1.0, 7.0, 6.5, 3.0))
    assert main(["profile", TINY]) == 0
    assert "the marks that time each row" in capsys.readouterr().err


def test_the_summary_of_a_profile_with_an_empty_grid_shows_the_others():
    # a calibration on a reduced grid (the busy-cores test's: no matmul or attention shapes) printed an
    # internal error from its summary when it succeeded, instead of the figures it measured
    from archcompiler.measure.calibrate import summarize

    profile = json.loads((ROOT / "archcompiler" / "data" / "machine-default-cpu.json").read_text())
    profile["kernels"]["matmul"], profile["kernels"]["attention"] = [], []
    text = summarize(profile)
    assert "linear" in text and "matmul" not in text and "attention" not in text
