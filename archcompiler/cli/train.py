"""archc train SPEC --data DIR : the spec's recipe on a folder of images (torchrun for several processes)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .common import add_set, command
    from .flops import positive

    p = command(sub, "train", help="train on a folder of images (one sub-folder per class)",
                description="Train the spec's network with its recipe (the spec's train: and data: sections; "
                "every flag overrides its field). Writes a run folder: spec.yaml, args.json, metrics.csv, "
                "curves.png, last.pt (resumable), best.pt, and the same weights as last.safetensors and best.safetensors. "
                "Fine-tuning: --weights a checkpoint of another class count starts the classifier layers afresh; "
                "--freeze keeps the layers up to one as they are. A stopped run (Ctrl-C) continues with "
                "archc train --out DIR --resume: the run folder's args.json holds its arguments. Several processes: "
                "torchrun --nproc-per-node N -m archcompiler train ...")
    p.add_argument("spec", metavar="SPEC", nargs="?",
                   help="the spec file (YAML); with --resume, the run folder's (its spec.yaml) unless given")
    p.add_argument("--data", metavar="DIR",
                   help="training images: DIR/CLASS/*.jpg, one folder per class (with --resume, the run's unless given)")
    p.add_argument("--val", metavar="DIR", help="validation images, laid out like --data (default: --val-split)")
    p.add_argument("--val-split", type=float, metavar="FRACTION",
                   help="hold out this fraction of each class for validation when --val is not given (default 0.1; 0: none)")
    p.add_argument("--epochs", type=positive, metavar="N", help="train.epochs")
    p.add_argument("--batch-size", type=positive, metavar="N", help="train.batch_size (the global batch)")
    p.add_argument("--lr", type=float, metavar="X", help="train.lr")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], help="where to train (default auto)")
    p.add_argument("--workers", type=int, metavar="N", help="data-loading processes (default: up to 4)")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--out", metavar="DIR", help="the run folder (default: runs/SPEC_NAME-N, a new one per run)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (default: SPEC's latest) exactly where it stopped, with the "
                        "arguments it began with (its args.json); a flag given again overrides its value, and "
                        "says so: --epochs may extend the run")
    p.add_argument("--weights", metavar="FILE",
                   help="start from these weights (a checkpoint, .safetensors or a state_dict; published weights by "
                        "name or URL, see --pretrained); classifier layers of another class count start afresh "
                        "(seeded), named in one line each")
    p.add_argument("--pretrained", action="store_true",
                   help="start from the builder's published weights (torchvision's default for SPEC, e.g. "
                        "googlenet), downloaded once into torch's hub cache, with their preprocessing; --weights "
                        "NAME (IMAGENET1K_V1) or URL picks others. With --set num_classes=N the classifier layers "
                        "start afresh")
    p.add_argument("--freeze", metavar="LAYER",
                   help="keep every layer up to and including LAYER (a spec layer name, e.g. inception_4e) as it "
                        "is: its weights and BatchNorm statistics do not change")
    p.add_argument("--seed", type=int, metavar="N", help="train.seed: initialisation, data order, augmentation")
    p.add_argument("--patience", type=positive, metavar="N",
                   help="stop when validation accuracy has not improved for N epochs")
    p.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard event files to RUN/tensorboard (needs: pip install tensorboard)")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error (default: skipped and counted)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_set(p)
    p.set_defaults(run=run, usage_error=p.error)


def run(args: argparse.Namespace) -> int:
    import os

    main = int(os.environ.get("RANK", "0")) == 0
    # train()'s arguments as given here (None: not given)
    given = {"spec": args.spec, "data": args.data, "val": args.val, "val_split": args.val_split,
             "overrides": args.set, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "seed": args.seed, "device": args.device, "workers": args.workers, "amp": args.amp or None,
             "weights": args.weights, "pretrained": args.pretrained or None, "freeze": args.freeze,
             "patience": args.patience, "tensorboard": args.tensorboard or None, "strict": args.strict or None}
    if args.resume and args.out is None and args.spec is None:
        args.usage_error("--resume needs the run folder: --out DIR (or SPEC, to resume its latest run)")
    missing = [name for name, value in (("SPEC", args.spec), ("--data", args.data)) if value is None]
    if missing and not args.resume:
        args.usage_error(f"the following arguments are required: {', '.join(missing)} (unless resuming a run: "
                         "--out DIR --resume)")
    from ..api import TrainOptions, resume_arguments, train, train_summary

    if args.resume:
        kw, changes = resume_arguments(args.out, given)
        if changes and main:
            print(f"archc: resuming {kw['out']} with {', '.join(changes)}", file=sys.stderr, flush=True)
    else:
        kw = {**given, "out": args.out, "val_split": 0.1 if args.val_split is None else args.val_split}
        if kw["val"] is not None or not kw["val_split"]:
            kw["val_split"] = None
    options = TrainOptions.from_given(kw).replace(val_split=kw.get("val_split"), resume=args.resume,
                                                   progress=not args.quiet)
    result = train(kw["spec"], kw["data"], options, overrides=kw.get("overrides"))
    if main:
        print(train_summary(result), file=sys.stderr if args.quiet else sys.stdout)
    return 130 if result.interrupted else 0
