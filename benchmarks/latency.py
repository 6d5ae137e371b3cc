"""How well does archc predict latency?  Run:  python benchmarks/latency.py

Calibrates this machine (archc calibrate), then for every shipped spec, at batch 1 and 8, with and
without --optimize: the predicted total latency (archc flops --latency, no torch) against the
measured one (archc profile: the median of 10 runs after warm-up), and the median absolute error
per row. Also the time of the whole `archc flops --latency` process.
Targets: total within +-15% for every spec (goal +-10%, nn-Meter's); per-row median error <= 20%;
`archc flops --latency` under 0.6 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine  # noqa: E402

from archcompiler.backends.torch.calibrate import calibrate  # noqa: E402
from archcompiler.cli.profile import profile_report  # noqa: E402

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "machine.json"
        start = time.perf_counter()
        import json
        path.write_text(json.dumps(calibrate()))
        print(f"calibration: {time.perf_counter() - start:.1f} s\n")
        print(f"{'spec':<28} {'optimize':>8} {'batch':>5} {'predicted ms':>12} {'measured ms':>11} {'ratio':>6} "
              f"{'row median error':>16}")
        within, count, row_errors = 0, 0, []
        for spec in SPECS:
            for optimize in (False, True):
                for batch in (1, 8):
                    r = profile_report(spec, batch, "cpu", optimize, args.repeats, path)
                    p, m = r["total"]["predicted_ms"], r["total"]["measured_ms"]
                    errs = [abs(x["predicted_ms"] - x["measured_ms"]) / x["measured_ms"] for x in r["rows"]
                            if x["measured_ms"]]
                    med = statistics.median(errs)
                    row_errors.append(med)
                    within += abs(p / m - 1) <= 0.15
                    count += 1
                    print(f"{spec.stem:<28} {'on' if optimize else 'off':>8} {batch:>5} {p:12.2f} {m:11.2f} "
                          f"{p / m:6.2f} {100 * med:15.0f}%", flush=True)
        print(f"\nwithin +-15%: {within} of {count}; per-row median error, median over cases: "
              f"{100 * statistics.median(row_errors):.0f}%")
        times = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "archcompiler", "flops", str(SPECS[0]), "--latency", "--machine",
                            str(path)], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        print(f"archc flops --latency, whole process: {statistics.median(times):.2f} s (target < 0.6 s)")


if __name__ == "__main__":
    main()
