"""ONNX from the exporters people use (issue #32): torchvision models exported by torch's classic
TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, at opset 13 and 17: most ONNX files in
the wild) and by its default dynamo exporter, then imported through the real CLI in a fresh process
(``python -m archcompiler import X.onnx -o x.yaml``), the spec built with the weights it wrote, and its
logits compared with onnxruntime's on the same seeded input (within 1e-4 of the largest).

Each model is exported twice: as built (fresh weights: zero biases and equal BatchNorm tensors, which
the exporters fold or share between inputs) and with trained-like weights (every parameter and BatchNorm
statistic randomly perturbed, seeded). Each cell is ``exact``, ``wrong`` (imported, logits differ),
``refused: <the first line of archc's message>`` or ``crashed`` (archc's internal error, or a traceback).
An exporter that fails on a model is ``export failed``; the classic exporter of opset 13 is run at 14
where the model's attention needs it (said in the cell).

torchvision is no dependency of archc: run this with an environment that has it, torch, onnx,
onnxruntime and onnxscript (the dynamo exporter's), and archc installed (editable):

    /path/to/venv/bin/python benchmarks/onnx_exporters.py [--only resnet18,vit_b_16]
        [--exporters classic13,classic17,dynamo] [--weights fresh,trained] [--keep DIR]

``--keep DIR`` keeps the ONNX files, specs and weights there (and reuses ONNX files already there).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
          "shufflenet_v2_x1_0", "squeezenet1_0", "googlenet", "convnext_tiny", "vit_b_16"]
EXPORTERS = {"classic13": (False, 13), "classic17": (False, 17), "dynamo": (True, None)}
WEIGHTS = ["fresh", "trained"]
TOLERANCE = 1e-4


sys.path.insert(0, str(Path(__file__).parent))
from onnx_round_trip import randomized  # noqa: E402  (trained-like weights, as the round trip gives them)


def model_of(name: str, weights: str) -> Any:
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name in ("googlenet",) else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    return randomized(model) if weights == "trained" else model


def opset_note(path: Path, exporter: str) -> str:
    """' (opset N)' where the file's opset is not the one its exporter was asked for (the classic exporter's 13
    is 14 where the model's attention needs it), else ''."""
    import onnx

    opset = next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                  if o.domain in ("", "ai.onnx")), None)
    asked = EXPORTERS[exporter][1]
    return f" (opset {opset})" if asked is not None and opset != asked else ""


def export(model: Any, path: Path, exporter: str) -> None:
    """Write the ONNX file (the classic exporter at opset 14 where 13 fails: the attention of ViT)."""
    import torch

    dynamo, opset = EXPORTERS[exporter]
    x = torch.randn(1, 3, 224, 224)
    kwargs: dict[str, Any] = {"input_names": ["image"], "output_names": ["logits"], "dynamo": dynamo}
    if dynamo:
        kwargs["external_data"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for version in ([opset, 14] if opset == 13 else [opset]):
            try:
                with quiet():
                    torch.onnx.export(model, (x,), str(path), **({"opset_version": version} if version else {}),
                                      **kwargs)
                return
            except Exception:
                if version == 14 or opset != 13:
                    raise


class quiet:
    """The exporters' own printing (warnings, TorchScript graphs, the dynamo exporter's progress) kept off the
    table: stdout and stderr, the file descriptors too, go to /dev/null inside."""

    def __enter__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)


def compare(onnx_path: Path, spec_path: Path) -> tuple[float, float]:
    """The largest absolute difference between onnxruntime's logits and the imported spec's, and the largest logit."""
    import numpy as np
    import onnxruntime
    import torch

    import archcompiler

    spec = archcompiler.load_spec(spec_path)
    net = archcompiler.build(spec, weights=str(spec_path.with_suffix(".safetensors"))).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        got = net(x)
    got = got[0] if isinstance(got, (tuple, list)) else got
    return float(np.abs(got.numpy() - want).max()), float(np.abs(want).max())


def perturbed(onnx_path: Path) -> Path:
    """The file with every float initializer of two or more numbers perturbed (seeded: times 1 + 0.1 N(0, 1), plus
    1e-3 N(0, 1)), nothing else changed: the graph the exporter wrote for the fresh model (its shared initializers,
    the zero biases it dropped), with numbers that tell its wirings apart (a fresh model's logits may all be 0:
    ViT's head is zeros)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(1)
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and a.size >= 2:
            b = a * (1 + 0.1 * rng.standard_normal(a.shape)) + 1e-3 * rng.standard_normal(a.shape)
            t.CopyFrom(numpy_helper.from_array(b.astype(a.dtype), t.name))
    out = onnx_path.with_name(onnx_path.stem + "-perturbed.onnx")
    onnx.save(model, str(out))
    return out


def cell(name: str, exporter: str, weights: str, folder: Path) -> str:
    stem = f"{name}-{exporter}-{weights}"
    onnx_path = folder / f"{stem}.onnx"
    if not onnx_path.exists():
        try:
            export(model_of(name, weights), onnx_path, exporter)
        except Exception as exc:  # noqa: BLE001 (a report: every cell gets its word)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
            return f"export failed: {first}"
    note = opset_note(onnx_path, exporter)
    word, detail = imported(onnx_path, folder / f"{stem}.yaml")
    if weights == "fresh" and word == "exact":       # and the same graph with numbers that tell wirings apart
        word, more = imported(perturbed(onnx_path), folder / f"{stem}-perturbed.yaml")
        detail = f"{detail}; perturbed: {more}"
    return f"{word} ({detail}){note}" if word in ("exact", "WRONG") else f"{word}: {detail}{note}"


def imported(onnx_path: Path, spec_path: Path) -> tuple[str, str]:
    """``archc import`` in a fresh process, then the comparison: (exact / WRONG / refused / crashed, the detail)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "archcompiler", "import", str(onnx_path), "-o", str(spec_path)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0 or "Traceback" in done.stderr:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        if done.returncode == 1 and "Traceback" not in done.stderr:
            first = lines[0] if lines else "(no message)"
            first = first[len(str(onnx_path)) + 2:] if first.startswith(f"{onnx_path}: ") else first
            return "refused", first[:150]
        return "crashed", f"exit {done.returncode}: {(lines[-1] if lines else '')[:120]}"
    try:
        diff, largest = compare(onnx_path, spec_path)
    except Exception as exc:  # noqa: BLE001
        return "crashed", f"building: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]}"
    return "exact" if diff <= TOLERANCE * largest else "WRONG", f"{diff:.1e} of {largest:.2g}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", default="", help="comma-separated torchvision builders (default: all ten)")
    p.add_argument("--exporters", default=",".join(EXPORTERS))
    p.add_argument("--weights", default=",".join(WEIGHTS))
    p.add_argument("--keep", default="", help="a folder to keep (and reuse) the files in")
    args = p.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = [n for n in MODELS if not args.only or n in args.only.split(",")]
    exporters = [e for e in args.exporters.split(",") if e]
    weights = [w for w in args.weights.split(",") if w]
    columns = [(e, w) for e in exporters for w in weights]
    print(f"torch {torch.__version__}; logits compared with onnxruntime's, exact within {TOLERANCE:g} of the largest")
    print("| model | " + " | ".join(f"{e} {w}" for e, w in columns) + " |")
    print("|---|" + "---|" * len(columns))
    counts = {"exact": 0, "all": 0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            row = []
            for e, w in columns:
                t0 = time.perf_counter()
                result = cell(name, e, w, folder)
                counts["all"] += 1
                counts["exact"] += result.startswith("exact")
                row.append(f"{result.replace('|', '/')} {time.perf_counter() - t0:.0f} s")
            print(f"| {name} | " + " | ".join(row) + " |", flush=True)
    print(f"{counts['exact']} / {counts['all']} exact")


if __name__ == "__main__":
    main()
