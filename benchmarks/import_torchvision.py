"""archc import against torchvision's own modules (issue #24): for each builder the zoo covers (the
CNNs and the token models: ViT, Swin, Swin V2, MaxViT), import torchvision's module (weights=None,
seeded), build the spec, load torchvision's state_dict strictly, compare logits in evaluation mode,
and parameters and FLOPs with the shipped spec; count the imported spec's lines; compare it layer
by layer with the shipped spec (archc diff --layers: the layers that compute, in the order the
network runs them, matched by op, output shape, parameters and MACs whatever their rows); and the time
to import resnet50 once torch is imported (median of --repeats).

Run in an environment that has torchvision (it is no dependency of archc):
    PYTHONPATH=. /tmp/tvenv/bin/python benchmarks/import_torchvision.py [--only resnet50,googlenet]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time


def layers_against(text: str, name: str) -> str:
    """archc diff --layers of the imported spec against the shipped one: every layer that computes, in
    the order the network runs them, matched by op, output shape, parameters and MACs whatever its name
    and row. 'n equal', or how many differ, the first few named."""
    import archcompiler

    report = archcompiler.diff(archcompiler.load_spec(text), name, layers=True)
    differ = [r["name"] for r in report["rows"] if r["status"] != "same"]
    if not differ:
        return f"{len(report['rows'])} equal"
    return f"{len(report['rows']) - len(differ)} equal, {len(differ)} differ ({', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", default="", help="comma-separated builder names (default: every zoo builder)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import torch
    import torchvision.models as tvm

    import archcompiler
    from archcompiler.spec import zoo as shipped

    names = [n for n in shipped.names() if inspect.isfunction(getattr(tvm, n, None))]     # builders, not modules
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    torch.manual_seed(0)
    ok = 0
    for name in names:
        t0 = time.perf_counter()
        try:
            model = getattr(tvm, name)(weights=None).eval()
            spec_in = archcompiler.load_spec(name)
            text = archcompiler.import_module(model, input=tuple(spec_in.input), name=name)
            spec = archcompiler.load_spec(text)
            rebuilt = archcompiler.build(spec).eval()
            rebuilt.load_state_dict(model.state_dict(), strict=True)
            x = torch.randn(1, *spec.input, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                diff = (rebuilt(x) - model(x)).abs().max().item()
            a, b = archcompiler.analyze(spec_in)["total"], archcompiler.analyze(spec)["total"]
            same = a["params"] == b["params"] and a["flops"] == b["flops"]
            ok += diff <= 1e-5 and same
            rows = layers_against(text, name)
            print(f"| {name} | ok | {diff:.1e} | {'equal' if same else 'DIFFER'} | {text.count(chr(10))} "
                  f"| {rows} | {time.perf_counter() - t0:.1f} s |", flush=True)
        except Exception as exc:  # noqa: BLE001 (a report: every builder gets its line)
            first = str(exc).splitlines()[0][:150].replace("|", "/")
            print(f"| {name} | refused | | | | | {first} |", flush=True)
    print(f"{ok} / {len(names)} builders: strict state_dict, logits within 1e-5, equal params and FLOPs")
    model = tvm.resnet50(weights=None)
    t = time.perf_counter()
    archcompiler.import_module(model)                     # the first call also imports torch.fx's parts
    print(f"import resnet50, the first call after torch is imported: {time.perf_counter() - t:.2f} s")
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        archcompiler.import_module(model)
        times.append(time.perf_counter() - t)
    print(f"import resnet50 (after torch is imported): median {statistics.median(times):.2f} s over {args.repeats}")


if __name__ == "__main__":
    main()
