"""archc build SPEC : compile the spec into a PyTorch module; save, emit source, TorchScript, ONNX."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXTENSIONS = {"model": "pt", "python": "py", "torchscript": "ts", "onnx": "onnx"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_features, add_set, command
    p = command(sub, "build", help="compile the spec into a PyTorch module",
                       description="Build the torch.nn.Module the spec describes and print its layer tree. "
                       "With -o, save it: weights plus the resolved spec (model.pt), or with --emit the "
                       "standalone PyTorch source, TorchScript or ONNX.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (YAML)")
    p.add_argument("-o", "--output", metavar="FILE", help="where to write (default for --emit: SPEC_NAME.py/.ts/.onnx)")
    p.add_argument("--emit", choices=["model", "python", "torchscript", "onnx"], default="model",
                   help="model: weights + spec, reloadable with archcompiler.load_model (default); "
                        "python: standalone source; torchscript; onnx")
    p.add_argument("--keep-batch-norm", action="store_true",
                   help="with --emit onnx: keep the BatchNormalization nodes (by default each is folded into the "
                        "convolution before it), so that archc import gives back the same parameters")
    p.add_argument("--weights", metavar="FILE", help="load a state_dict, checkpoint or .safetensors file; classifier layers of another class "
                        "count start afresh (from --seed), any other mismatch is an error. For a builder (SPEC "
                        "resnet50): torchvision's weights by name (IMAGENET1K_V1, DEFAULT) or a URL, downloaded once "
                        "into torch's hub cache")
    p.add_argument("--pretrained", action="store_true",
                   help="load the builder's default published weights (torchvision's; --weights NAME for others), "
                        "with their input size and preprocessing in the spec")
    p.add_argument("--drop-training-heads", action="store_true",
                   help="build without training-only heads (to load checkpoints that lack them)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible initialisation")
    p.add_argument("--optimize", action="store_true",
                   help="the inference module: BatchNorm folded, ReLU fused, dropout and auxiliary heads removed, "
                        "channels-last (with --emit python: its source)")
    p.add_argument("--compile", action="store_true",
                   help="wrap the module in torch.compile where a compiler is available (a message says when not)")
    p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                   help="build even when the parameters and activations would not fit in free memory")
    p.add_argument("--force", action="store_true",
                   help="replace the default output file (--emit without -o) even when archc did not write it")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the layer tree")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="json: the layer tree, parameter counts and the file written, as data")
    add_set(p)
    add_features(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io import check_default_output, refuse_inputs
    from ..passes import annotated_graph, rows, totals
    from ..pretrained import resolve
    from ..spec import load_spec
    from .tables import human, size

    published = resolve(args.spec, args.weights, args.pretrained, args.set)
    spec = load_spec(args.spec, published.overrides)
    if published.entry is not None and published.entry.model_note:
        print(f"archc: {published.entry.model_note}", file=sys.stderr)
    g = annotated_graph(spec)
    top, fine = rows(g, spec), rows(g, spec, depth=2)
    print(f"building {spec.name} (importing torch)...", file=sys.stderr)
    from ..backends.torch import build

    heads = not args.drop_training_heads
    out = Path(args.output or f"{spec.name}.{EXTENSIONS[args.emit]}") if args.output or args.emit != "model" else None
    if args.optimize and out is not None and args.emit == "model":
        from ..errors import BackendError, error
        raise BackendError([error("a model file keeps the ordinary module; optimise when you load it: "
                                  "archcompiler.load_model(path, optimize=True)", "--optimize",
                                  hint="with --optimize, write --emit python, torchscript or onnx")])
    if out is not None:       # refuse a bad output before the (slow) build
        refuse_inputs(out, [p for p in (args.spec, published.file or args.weights) if p])
        if not args.output:
            check_default_output(out, args.force)
    model = build(spec, seed=args.seed, weights=published.weights, heads=heads, check_memory=args.memory_check,
                  optimize=args.optimize, compile=args.compile)
    n_params = sum(p.numel() for p in model.parameters())
    if args.optimize:
        from ..passes.optimize import optimize

        g = optimize(g)
        top, fine = rows(g, spec), rows(g, spec, depth=2)
        heads = False
    expected = totals(g, training=heads)["params"]
    if args.format == "json":
        written = _write(out, args, spec, model) if out is not None else None
        print(json.dumps({"spec": spec.name, "parameters": n_params, "analysis_parameters": expected,
                          "training_heads": heads, "rows": fine, "written": str(written) if written else None},
                         indent=2))
        return 0 if n_params == expected else 1
    if not args.quiet:
        children: dict[str, list[dict]] = {}
        for r in fine:
            children.setdefault(r["name"].split("/")[0], []).append(r)
        print(f"{spec.name}  input {size(spec.input)}")
        for r in top:
            if r["training_only"] and not heads:
                continue
            tag = "  (training only)" if r["training_only"] else ""
            print(f"  {r['name']:<16} {r['type']:<16} {size(r['output']):>12} {human(r['params']):>8}{tag}")
            subs = children.get(r["name"], [])
            if len(subs) > 1 or (subs and subs[0]["name"] != r["name"]):
                for s in subs:
                    leaf = s["name"].split("/", 1)[-1]
                    print(f"    {leaf:<14} {s['type']:<16} {size(s['output']):>12} {human(s['params']):>8}")
    same = "equals" if n_params == expected else "DIFFERS FROM"
    print(f"parameters: {n_params:,} (torch); {same} archc flops' total {expected:,}")
    if n_params != expected:
        return 1
    if out is None:
        return 0
    print(f"wrote {_write(out, args, spec, model)}")
    return 0


def _write(out: Path, args: argparse.Namespace, spec, model) -> Path:
    from ..backends.torch import save_model

    if args.emit == "model":
        save_model(model, out)
    elif args.emit == "python":
        from ..io import write_text
        write_text(out, model.code)
    else:
        from ..backends.torch.export import export
        print(f"exporting {args.emit}...", file=sys.stderr)
        export(model, spec, args.emit, out, keep_batch_norm=args.keep_batch_norm)
    return out
