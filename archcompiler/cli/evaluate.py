"""archc evaluate SPEC --weights CKPT --data DIR : accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_checkpoint_options, add_set, command

    p = command(sub, "evaluate", help="accuracy and confusion matrix of a trained network on an image folder",
                description="Evaluate trained weights on a folder laid out like the training data (DIR/CLASS/*.jpg), "
                "with the preprocessing saved in the checkpoint. Prints accuracy, per-class accuracy and the "
                "confusion matrix, and draws the matrix to a PNG.")
    p.add_argument("spec", metavar="SPEC", help="the spec file, or a checkpoint written by archc train (best.pt or best.safetensors)")
    add_checkpoint_options(p, " (the folder's classes must be among them)")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="images: DIR/CLASS/*.jpg (a clip network's clips: DIR/CLASS/CLIP/00001.jpg, ...)")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="where to draw the confusion matrix (default: confusion.png beside the checkpoint, none for "
                        "published weights; 'none' for no picture)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch (default 64)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or json")
    add_set(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..api import evaluate, is_published

    # the picture goes with the checkpoint it describes (runs/NAME/confusion.png), never into the current
    # folder: published weights (in torch's cache) get one only where --plot says
    published = is_published(args.weights, args.pretrained)
    plot = args.plot or ("none" if published else str(Path(args.weights or args.spec).with_name("confusion.png")))
    report = evaluate(args.spec, args.data, weights=args.weights, overrides=args.set, device=args.device,
                      batch_size=args.batch_size, plot=None if plot == "none" else plot, pretrained=args.pretrained)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    classes = report["classes"]
    width = max(8, *(len(c) for c in classes))
    if "miou" in report:                 # a segmentation network: over the labelled pixels
        miou = "-" if report["miou"] is None else f"{report['miou']:.4f}"
        print(f"{report['spec']}: mean IoU {miou}, pixel accuracy {report['accuracy']:.4f} on {report['images']} "
              f"images ({report['pixels']:,} labelled pixels)"
              + (f" ({report['skipped']} unreadable, skipped)" if report["skipped"] else ""))
        print(f"  {'class':<{width}} {'IoU':>8} {'accuracy':>8}")
        for c in classes:
            iou, acc = report["iou"][c], report["per_class_accuracy"][c]
            print(f"  {c:<{width}} {'-' if iou is None else f'{iou:.4f}':>8} {'-' if acc is None else f'{acc:.4f}':>8}")
    else:
        print(f"{report['spec']}: accuracy {report['accuracy']:.4f} on {report['images']} "
              f"{'clips' if 'clips' in report else 'images'}"
              + (f" ({report['skipped']} unreadable, skipped)" if report["skipped"] else ""))
        for c in classes:
            acc = report["per_class_accuracy"][c]
            print(f"  {c:<{width}} {'-' if acc is None else f'{acc:.4f}'}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print("  " + " " * width + " ".join(f"{c[:8]:>8}" for c in classes))
    for c, row in zip(classes, report["confusion"]):
        print(f"  {c:<{width}}" + " ".join(f"{v:>8}" for v in row))
    if report.get("other"):
        print(f"  ({report['other']} images predicted as a category outside these)")
    if "plot" in report:
        print(f"wrote {report['plot']}")
    return 0
