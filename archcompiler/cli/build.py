"""archc build SPEC : compile the spec into a PyTorch module; save, emit source, TorchScript, ONNX."""

from __future__ import annotations

import argparse
import json


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
    from ..api import BuildOptions, compile_model

    options = BuildOptions(seed=args.seed, weights=args.weights, pretrained=args.pretrained,
                           heads=not args.drop_training_heads, check_memory=args.memory_check, optimize=args.optimize,
                           compile=args.compile)
    built = compile_model(args.spec, args.output, options, overrides=args.set, emit=args.emit,
                          keep_batch_norm=args.keep_batch_norm, force=args.force, progress=True)
    n_params, expected, written = built["parameters"], built["analysis_parameters"], built["written"]
    if args.format == "json":
        print(json.dumps({"spec": built["spec"], "parameters": n_params, "analysis_parameters": expected,
                          "training_heads": built["training_heads"], "rows": built["layers"],
                          "written": str(written) if written else None}, indent=2))
        return 0 if n_params == expected else 1
    if not args.quiet:
        _print_tree(built)
    same = "equals" if n_params == expected else "DIFFERS FROM"
    print(f"parameters: {n_params:,} (torch); {same} archc flops' total {expected:,}")
    if n_params != expected:
        return 1
    if written is not None:
        print(f"wrote {written}")
    return 0


def _print_tree(built: dict) -> None:
    """The rows with their layers, one line each: name, type, output size, parameters."""
    from .tables import human, size

    heads = built["training_heads"]
    children: dict[str, list[dict]] = {}
    for r in built["layers"]:
        children.setdefault(r["name"].split("/")[0], []).append(r)
    print(f"{built['spec']}  input {size(built['input'])}")
    for r in built["rows"]:
        if r["training_only"] and not heads:
            continue
        tag = "  (training only)" if r["training_only"] else ""
        print(f"  {r['name']:<16} {r['type']:<16} {size(r['output']):>12} {human(r['params']):>8}{tag}")
        subs = children.get(r["name"], [])
        if len(subs) > 1 or (subs and subs[0]["name"] != r["name"]):
            for s in subs:
                leaf = s["name"].split("/", 1)[-1]
                print(f"    {leaf:<14} {s['type']:<16} {size(s['output']):>12} {human(s['params']):>8}")
