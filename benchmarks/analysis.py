"""How fast is the static analysis?  Run:  python benchmarks/analysis.py

1. `archc flops specs/googlenet.yaml` as a whole process, against the torch route to the same
   number (a process that imports torch, builds the model and counts with FlopCounterMode).
   Targets: archc <= 0.5 s median, and >= 5x faster than the torch route.
2. Scaling: synthetic specs of 100, 1,000 and 10,000 layers analysed in-process (load + lower +
   shapes + cost + report). Targets: time per layer stays flat; 10,000 layers in <= 3 s.
3. `archc draw specs/googlenet.yaml` (SVG, real `dot`) as a whole process. Target: <= 2 s.
4. `archc sweep` of 100 GoogLeNet variants, torch-free. Target: a few seconds.
5. `archc flops NAME` for the largest torchvision builders, each as a whole process: median wall
   time and the least CPU time (user + sys) of the runs. Target (issue 22): under 0.6 s wall on a
   quiet 2-core machine; on a shared one wall time says little, CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleave, machine, median, process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "specs" / "googlenet.yaml")
# the slowest builders to analyse (most layers, or the largest tables and blocks)
LARGEST = ["regnet_y_128gf", "efficientnet_b7", "densenet201", "resnet152", "vit_h_14", "convnext_large"]
TORCH_ROUTE = f"""
import torch, archcompiler
from torch.utils.flop_counter import FlopCounterMode
model = archcompiler.build({SPEC!r}).eval()
with torch.no_grad(), FlopCounterMode(display=False) as counter:
    model(torch.randn(1, 3, 224, 224))
print(counter.get_total_flops())
"""


def synthetic(n_layers: int) -> str:
    """A plain chain of n conv / relu / batch_norm layers on a small input (shapes stay valid)."""
    lines = ["name: synthetic", "input: [8, 16, 16]", "layers:"]
    kinds = ["{name: c%d, op: conv, out: 8, kernel: 3, padding: 1}", "{name: r%d, op: relu}",
             "{name: b%d, op: batch_norm}"]
    lines += ["  - " + kinds[i % 3] % i for i in range(n_layers)]
    return "\n".join(lines) + "\n"


def wall_and_cpu(*args: str) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of one whole ``python args...`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--builders", nargs="*", default=LARGEST, metavar="NAME",
                        help="the builders item 5 times (default: the six slowest to analyse)")
    args = parser.parse_args()
    print(f"machine: {machine()}\n")

    # 1. whole process: archc flops vs the torch route
    times = interleave({"archc flops": process("-m", "archcompiler", "flops", SPEC),
                        "torch route": process("-c", TORCH_ROUTE)}, args.repeats)
    a, t = median(times["archc flops"]), median(times["torch route"])
    print(f"1. GoogLeNet FLOPs, whole process (median of {args.repeats}, interleaved)")
    print(f"   archc flops specs/googlenet.yaml   {a:6.3f} s   target <= 0.5 s: {'met' if a <= 0.5 else 'MISSED'}")
    print(f"   import torch + build + FlopCounter {t:6.3f} s")
    print(f"   speed-up                           {t / a:6.1f} x   target >= 5x: {'met' if t / a >= 5 else 'MISSED'}\n")

    # 2. scaling with the number of layers
    import archcompiler
    print("2. analysis time vs spec size (in-process, median of 3)")
    per_layer = {}
    archcompiler.analyze(synthetic(10))        # warm up: pydantic builds its validators on first use
    for n in (100, 1000, 10000):
        text = synthetic(n)
        runs = []
        for _ in range(3):
            gc.collect()                       # start each run from a clean heap, not the last run's garbage
            start = time.perf_counter()
            archcompiler.analyze(text)
            runs.append(time.perf_counter() - start)
        per_layer[n] = median(runs) / n
        print(f"   {n:6d} layers  {median(runs):7.3f} s   {1e6 * per_layer[n]:7.1f} us/layer")
    flat = per_layer[10000] / per_layer[100]
    total = per_layer[10000] * 10000
    print(f"   per-layer time 10,000 vs 100 layers: {flat:.2f}x (flat = about 1)")
    print(f"   10,000 layers in {total:.2f} s   target <= 3 s: {'met' if total <= 3 else 'MISSED'}\n")

    # 3. draw
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    draw = interleave({"draw": process("-m", "archcompiler", "draw", SPEC, "-o", str(out / "googlenet.svg"))},
                      max(3, args.repeats // 2))
    d = median(draw["draw"])
    print("3. archc draw specs/googlenet.yaml (SVG, whole process)")
    print(f"   {d:6.3f} s   target <= 2 s: {'met' if d <= 2 else 'MISSED'}\n")

    # 4. a sweep of 100 GoogLeNet variants, torch-free (the shipped machine profile: no calibration)
    grid = ["width=0.25,0.5,0.75,1.0,1.25", "num_classes=2,10,100,1000", "dropout=0.2,0.3,0.4,0.5,0.6"]
    profile = str(ROOT / "archcompiler" / "data" / "machine-default-cpu.json")
    sweep = interleave({"sweep": process("-m", "archcompiler", "sweep", SPEC, *[a for g in grid for a in ("--grid", g)],
                                         "--machine", profile, "-o", str(out / "sweep"))}, 3)
    w = median(sweep["sweep"])
    print("4. archc sweep specs/googlenet.yaml, 5 x 4 x 5 = 100 variants with predicted latency, table and "
          "pareto.png (whole process)")
    print(f"   {w:6.3f} s   target: a few seconds, without torch\n")

    # 5. archc flops NAME: the zoo's largest builders, whole process, wall and CPU time
    pyc = "PYTHONDONTWRITEBYTECODE set: no .pyc written" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ".pyc files"
    print(f"5. archc flops NAME, whole process ({pyc}; median wall, least CPU of {args.repeats}, interleaved)")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in args.builders}
    for _ in range(args.repeats):
        for name in args.builders:
            runs[name].append(wall_and_cpu("-m", "archcompiler", "flops", name))
    for name, times in runs.items():
        wall, cpu = median([w for w, _ in times]), min(c for _, c in times)
        print(f"   {name:16s} wall {wall:6.3f} s   CPU {cpu:6.3f} s   target wall < 0.6 s: "
              f"{'met' if wall < 0.6 else 'MISSED'}")


if __name__ == "__main__":
    main()
