"""archc predict SPEC --weights CKPT IMAGE... : the most likely classes of each image."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_checkpoint_options, add_set, command
    from .flops import positive

    p = command(sub, "predict", help="the top classes of images, with probabilities",
                description="Classify images with trained weights, prepared with the preprocessing saved in the "
                "checkpoint; prints the top-k classes and their probabilities.")
    p.add_argument("spec", metavar="SPEC", help="the spec file, or a checkpoint written by archc train (best.pt or best.safetensors)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (a clip network's: clip folders, each a folder of frames)")
    add_checkpoint_options(p, ': archc predict resnet50 --pretrained cat.jpg')
    p.add_argument("--top", type=positive, default=5, metavar="K", help="how many classes per image (default 5)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument("--masks", metavar="DIR", default="masks",
                   help="a segmentation network's predicted masks go here, one PNG per image (default masks/)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or json")
    add_set(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import predict

    results = predict(args.spec, args.images, weights=args.weights, overrides=args.set, top=args.top,
                      device=args.device, pretrained=args.pretrained, masks=args.masks)
    if args.format == "json":
        print(json.dumps(results, indent=2))
        return 0
    from ..errors import printable

    for r in results:
        print(printable(r["image"]))
        if "mask" in r:                  # a segmentation network: the mask written, the classes it shows
            print(f"  mask: {r['mask']}")
            for name, share in sorted(r["classes"].items(), key=lambda kv: -kv[1]):
                print(f"  {share:7.2%}  {name}")
            continue
        for t in r["top"]:
            print(f"  {t['probability']:7.2%}  {t['class']}")
    return 0
