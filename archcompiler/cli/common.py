"""What every command module shares: the examples each --help ends with, the subcommand
constructor, the --set option and how errors are printed. Command modules import this, never
the package ``archcompiler.cli`` (which imports them)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ..errors import ArchcError

EXIT_CODES = ("exit codes: 0 success; 1 invalid input or a failed check (file:line:col: message); "
              "2 usage error; 3 internal error (a bug in archc); 130 interrupted (Ctrl-C)")

# The examples every command's --help ends with; tests/test_cli.py runs each of them.
EXAMPLES: dict[str, list[str]] = {
    "validate": ["archc validate specs/*.yaml",
                 "archc validate specs/googlenet.yaml --set num_classes=2 --format json"],
    "flops": ["archc flops specs/googlenet.yaml",
              "archc flops specs/googlenet.yaml --depth 2 --units flops --batch 8",
              "archc flops specs/googlenet-torchvision.yaml --input 3x299x299 --format json"],
    "check": ["archc check specs/googlenet.yaml",
              "archc check specs/googlenet-torchvision.yaml --tolerance 0.05 --format json"],
    "build": ["archc build specs/googlenet.yaml",
              "archc build specs/googlenet-small.yaml -o small.pt --seed 0",
              "archc build specs/googlenet-small.yaml --emit python -o small.py -q"],
    "draw": ["archc draw specs/googlenet.yaml",
             "archc draw specs/googlenet.yaml --collapse --color flops -o googlenet-collapsed.svg",
             "archc draw specs/resnet18.yaml --rankdir LR --format dot -o resnet18.dot"],
    "resolve": ["archc resolve specs/googlenet-2class.yaml",
                "archc resolve specs/googlenet.yaml --set width=0.5 --format json"],
    "diff": ["archc diff specs/googlenet.yaml specs/googlenet-torchvision.yaml",
             "archc diff specs/googlenet.yaml specs/googlenet.yaml --set-b num_classes=2 --format markdown",
             "archc diff resnet50 resnext50_32x4d --layers"],
    "schema": ["archc schema -o archc.schema.json", "archc schema"],
    "ops": ["archc ops", "archc ops conv", "archc ops --format json"],
    "train": ["archc train specs/googlenet-small.yaml --data digits/ --set num_classes=2 --epochs 2 --out runs/small",
              "archc train --out runs/small --resume --epochs 3"],
    "evaluate": ["archc evaluate specs/googlenet-small.yaml --set num_classes=2 --weights runs/small/best.pt "
                 "--data digits/",
                 "archc evaluate runs/small/best.pt --data digits/ --format json --plot none"],
    "sweep": ["archc sweep specs/googlenet.yaml --grid width=0.5,0.75,1.0 --grid num_classes=10,1000",
              "archc sweep mobilenet_v2 --grid width_mult=0.5,1.0 --grid 'input=[3,160,160],[3,224,224]' -o sweep-mnv2"],
    "report": ["archc report specs/googlenet.yaml -o googlenet-report.html",
               "archc report specs/resnet18.yaml --machine machine.json --batch 8 -o resnet18-report.html",
               "archc report --sweep sweep-mnv2 -o sweep-mnv2.html"],
    "zoo": ["archc zoo", "archc zoo resnet --format markdown"],
    "import": ["archc import archcompiler:build --arg spec_or_path=resnet50 -o resnet50-imported.yaml",
               "archc import archcompiler:build --arg spec_or_path=specs/mobilenet_v2.yaml --flat"],
    "calibrate": ["archc calibrate --quick -o machine.json", "archc calibrate"],
    "profile": ["archc profile specs/googlenet-small.yaml --machine machine.json --repeats 3",
                "archc profile specs/googlenet-small.yaml --machine machine.json --batch 8 --optimize --format json"],
    "predict": ["archc predict runs/small/best.pt digits/0/0.png digits/1/0.png --top 2",
                "archc predict runs/small/best.pt digits/1/7.png --format json"],
}
# what `archc --help` shows first: the main job, then one line for each thing people come for
TOP_EXAMPLES = "\n".join(f"  {e}" for e in [
    "archc flops specs/googlenet.yaml                  # the paper's table, regenerated, with totals",
    "archc check specs/googlenet.yaml                  # the paper's own numbers against the spec's",
    "archc build specs/googlenet.yaml -o googlenet.pt  # the PyTorch module (weights + spec)",
    "archc draw specs/googlenet.yaml --collapse        # the diagram, googlenet.svg",
    "archc flops specs/googlenet.yaml --set num_classes=2 --set width=0.5   # a variant",
    "archc train specs/googlenet-small.yaml --data digits/ --set num_classes=2 --epochs 6",
    "archc report specs/googlenet.yaml -o googlenet-report.html",
    "archc sweep specs/googlenet.yaml --grid width=0.5,0.75,1.0 -o sweep   # variants: table, Pareto plot",
])
# examples that need a folder of images (tests/test_training.py runs them on one it writes)
NEEDS_IMAGES = {"train", "evaluate", "predict"}


def command(sub: argparse._SubParsersAction, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with its examples and the exit codes."""
    examples = "\n".join(f"  {e}" for e in EXAMPLES[name])
    return sub.add_parser(name, help=help, description=description,
                          epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_set(p: argparse.ArgumentParser, flag: str = "--set", dest: str = "set", what: str = "") -> None:
    p.add_argument(flag, dest=dest, action="append", default=[], metavar="PATH=VALUE",
                   help=f"override a value{what}: a parameter (num_classes=2), a layer field "
                        "(conv1.out=32), a table cell (inception_4b.5x5=96) or a key path "
                        "(outputs.main.loss=binary_cross_entropy); repeatable")


class _Features(argparse.Action):
    """``--features layer2,layer3`` is ``--set features=["layer2", "layer3"]`` (numbers: stage indices)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = [v.strip() for v in str(values).split(",") if v.strip()]
        if not items:
            parser.error(f"{option_string}: name at least one layer or stage (layer2,layer3 or 1,2,3)")
        chosen = [int(v) if re.fullmatch(r"-?\d{1,6}", v) else v for v in items]
        namespace.set = [*(getattr(namespace, "set", None) or []), f"features={json.dumps(chosen)}"]


def add_features(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", action=_Features, metavar="LIST", default=argparse.SUPPRESS,
                   help="a feature extractor: the network returns these layers' maps (a dict) and drops what "
                        "follows them; layer names (the spec's, conv3_x, or torch's, layer2) or stage indices "
                        "(timm's out_indices: 1,2,3; -1 the last), comma-separated; the spec's features:")


def print_errors(exc: ArchcError, fmt: str = "text") -> None:
    if fmt == "json":
        print(json.dumps({"ok": False, "errors": [d.to_json() for d in exc.errors]}, indent=2))
    else:
        for d in exc.errors:
            print(d.format(), file=sys.stderr)


CHECKPOINT_HELP = ("the checkpoint (runs/NAME/best.pt or best.safetensors) or a state_dict; or, for a builder "
                   "(SPEC resnet50), torchvision's weights by name (IMAGENET1K_V1, DEFAULT) or a URL, downloaded "
                   "once into torch's hub cache")


def add_checkpoint_options(p: argparse.ArgumentParser, pretrained_help: str) -> None:
    """``--weights CKPT`` and ``--pretrained``, as evaluate and predict take them."""
    p.add_argument("--weights", metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument("--pretrained", action="store_true",
                   help="the builder's default published weights (torchvision's), with their preprocessing and "
                        f"category names{pretrained_help}")

