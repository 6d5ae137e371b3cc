"""ONNX round trip for every shipped spec (issue #24): build the spec (seed 0, evaluation mode), export it
as ONNX keeping its BatchNormalization nodes (``archc build --emit onnx --keep-batch-norm``), import
the file (``archc import model.onnx``: a spec and a safetensors weights file), build the imported spec
with those weights, and compare parameters (the imported spec's count against the original's) and
logits on one seeded input: the largest absolute difference, which must be at most 1e-5 of the largest
logit (float rounding).

Every name ``archc zoo`` answers (the torchvision builders and the shipped spec files that are no
builder) and the spec files a builder's name hides (``specs/googlenet.yaml``, the paper's). The largest models are exported at a reduced input (``--set input=...``, parameters
unchanged), the rest at their native input; the table says which.

    PYTHONPATH=. python3 benchmarks/onnx_round_trip.py [--only resnet18,vit_b_16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

# the huge ones: their ONNX export at the native input takes minutes and gigabytes; these inputs keep every
# layer's shape rule (ViT's patches, RegNet's and EfficientNet's strides), and the parameters are unchanged
# except ViT's position embedding, whose length follows the input (its count is compared as built).
# vit_h_14 and regnet_y_128gf hold more than 2 GB of float32 parameters, protobuf's limit for one file:
# the exporter writes them as external data (PATH.data beside PATH), which archc import reads from there
REDUCED = {"vit_h_14": [3, 112, 112], "regnet_y_128gf": [3, 64, 64], "efficientnet_b7": [3, 64, 64]}


def randomized(model: Any) -> Any:
    """Parameters and BatchNorm statistics as a trained network has them (seeded): a freshly initialised
    one has zero biases and identical BatchNorm tensors, which ONNX's optimiser drops (a zero Gemm bias)
    or shares between inputs, so its file no longer holds the network's parameters."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g)).add_(1e-3 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def round_trip(name: str, folder: Path) -> tuple[str, int, int, float, float]:
    import torch

    import archcompiler
    from archcompiler.backends.torch.export import export
    from archcompiler.importers.onnx import import_onnx
    from archcompiler.spec import zoo

    overrides = [f"input=[{','.join(map(str, REDUCED[name]))}]"] if name in REDUCED else None
    spec = archcompiler.load_spec(zoo.SPEC_DIR / Path(name).name if name.startswith("specs/") else name, overrides)
    name = Path(name).stem
    original = randomized(archcompiler.build(spec, seed=0).eval())
    onnx_path = folder / f"{name}.onnx"
    export(original, spec, "onnx", onnx_path, keep_batch_norm=True)
    out = folder / f"{name}.yaml"
    text = import_onnx(onnx_path, str(out), name=name)
    out.write_text(text)
    imported = archcompiler.load_spec(out)
    rebuilt = archcompiler.build(imported, weights=str(out.with_suffix(".safetensors"))).eval()
    a = archcompiler.analyze(spec)["total"]["params"]
    b = archcompiler.analyze(imported)["total"]["params"]
    x = torch.randn(1, *spec.input, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = original(x)
        diff = (rebuilt(x) - want).abs().max().item()
    return "x".join(map(str, spec.input)), a, b, diff, want.abs().max().item()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", default="", help="comma-separated names (default: every name of archc zoo)")
    args = p.parse_args()
    import torch

    from archcompiler.spec import zoo

    torch.set_num_threads(max(1, torch.get_num_threads()))
    # and the spec files a builder's name hides (specs/googlenet.yaml is the paper's; the builder googlenet is
    # googlenet-torchvision.yaml), by path
    builders = zoo.builders()
    names = zoo.names() + [f"specs/{p.name}" for p in zoo.spec_files() if p.stem in builders and builders[p.stem].file != p]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    ok = 0
    print("| spec | input | params (spec) | params (imported) | max logit difference | largest logit | result | time |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                shape, a, b, diff, largest = round_trip(name, Path(tmp))
                good = a == b and diff <= 1e-5 * largest
                ok += good
                note = " (reduced)" if name in REDUCED else ""
                print(f"| {name} | {shape}{note} | {a:,} | {b:,} | {diff:.1e} | {largest:.2f} | {'ok' if good else 'DIFFER'} "
                      f"| {time.perf_counter() - t0:.1f} s |", flush=True)
            except Exception as exc:  # noqa: BLE001 (a report: every spec gets its line)
                first = str(exc).strip().splitlines()[0][:160].replace("|", "/") if str(exc).strip() else type(exc).__name__
                print(f"| {name} | | | | | | refused: {first} | {time.perf_counter() - t0:.1f} s |", flush=True)
    print(f"{ok} / {len(names)} specs: identical parameter counts, logits within 1e-5 of the largest")


if __name__ == "__main__":
    main()
