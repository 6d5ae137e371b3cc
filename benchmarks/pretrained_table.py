"""The facts behind ``--pretrained`` (issue #33): torchvision's published ImageNet weights, per builder,
as archc's own data file ``archcompiler/data/pretrained.json`` (torchvision never becomes a dependency
of archc: this script is the only thing that reads torchvision, and it runs in a side environment).

Run from the repository root, in an environment that has torchvision 0.29.1 (torch 2.14.1):
    PYTHONPATH=. /tmp/tvenv/bin/python benchmarks/pretrained_table.py [-o archcompiler/data/pretrained.json]

For every classification builder (``torchvision.models.list_models(module=torchvision.models)``) and each
of its weights (``get_model_weights(name)``) it writes: the weights' name, which one is DEFAULT, the URL,
the file name, the sha256 prefix ``torch.hub.load_state_dict_from_url(check_hash=True)`` checks (the
hash part of the file name), the evaluation transforms (resize, crop, interpolation, mean, std),
num_params, min_size, ImageNet-1K acc@1 / acc@5, GFLOPS, the file's size in MB, the recipe, the license
where torchvision names one (else null), torchvision's one-paragraph description (docs), and the
categories (the 1000 ImageNet names once, under ``categories.imagenet1k``, referenced by key; null for
weights without categories; NaN metrics as null). Nothing is downloaded: no weights are fetched.

Per weights, ``overrides`` holds the builder arguments torchvision changes when it is given those weights
(found by building each model on the meta device with the checkpoint loading stubbed out, and comparing
the arguments its top-level module was constructed with, and its attributes after loading, against the
build with weights=None; init_weights, which only chooses the initialisation the checkpoint replaces,
is left out, and so is num_classes, which the weights set to its default, 1000). The builder's ``overrides`` are its DEFAULT weights'. ``load_notes`` says
where torchvision changes the checkpoint, or the model, around loading (densenet's key renames, ViT's
legacy MLP keys, MNASNet's v1 stem, googlenet's auxiliary heads dropped after loading).

It also checks the table against archc, with the main environment's ``python3`` (archc's own
dependencies need not be in this one): the builder names against archc's zoo, num_params against
``archcompiler.analyze`` for every weights entry, and, for resnet18, googlenet and vit_b_16, the
state_dict keys and shapes of ``archc build NAME`` against torchvision's module built with weights=None
and the DEFAULT weights' arguments. The results go into the file's ``about`` text.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
import torchvision.models as tvm
from torchvision.models import regnet
from torchvision.models._api import WeightsEnum

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "archcompiler" / "data" / "pretrained.json"
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")   # torch.hub's own: the prefix check_hash=True compares
INIT_ONLY = {"init_weights"}                 # arguments that only choose the initialisation the weights replace
KEY_CHECK = ["resnet18", "googlenet", "vit_b_16"]
HOOK_NOTES = {
    "MLPBlock": "a checkpoint saved before torchvision's MLPBlock version 2 names the MLP's linears "
                "mlp.linear_1 / mlp.linear_2: torchvision's MLPBlock._load_from_state_dict renames them "
                "mlp.0 / mlp.3 when loading",
    "MNASNet": "a version-1 checkpoint (stem of fixed width) makes torchvision's MNASNet._load_from_state_dict "
               "rebuild the stem as version 1 when alpha != 1.0, before loading",
}


# ---------------------------------------------------------------- facts from the weights' metadata


def sha256_prefix(file: str) -> str:
    """The hash prefix torch.hub checks: HASH_REGEX's first match, which must also be the part after the
    last '-' before the extension."""
    m = HASH_REGEX.search(file)
    last = file.rsplit("-", 1)[1].split(".", 1)[0] if "-" in file else None
    if not m or m.group(1) != last or len(last) < 8:
        raise SystemExit(f"{file}: no clear hash part (torch.hub: {m and m.group(1)!r}, last '-': {last!r})")
    return last


def number(x):
    """A metric as JSON: NaN (vgg16's feature-only weights) as null."""
    return None if isinstance(x, float) and math.isnan(x) else x


def one(size):
    """resize_size / crop_size: [256] -> 256; a pair stays a list."""
    size = list(size)
    return size[0] if len(size) == 1 else size


def transforms_of(weights) -> dict:
    t = weights.transforms()
    if type(t).__name__ != "ImageClassification":
        raise SystemExit(f"{weights}: transforms are {type(t).__name__}, not ImageClassification")
    if t.antialias is not True:
        raise SystemExit(f"{weights}: antialias={t.antialias} (the table assumes True)")
    return {"resize": one(t.resize_size), "crop": one(t.crop_size), "interpolation": t.interpolation.value.lower(),
            "mean": list(t.mean), "std": list(t.std)}


# ---------------------------------------------------------------- what the builder changes around loading


def norm(v, depth=0):
    """A constructor argument as comparable, JSON-like data (partials, classes and config objects by value)."""
    if depth > 6:
        return repr(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [norm(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {str(k): norm(x, depth + 1) for k, x in v.items()}
    if isinstance(v, functools.partial):
        return {"partial": norm(v.func, depth + 1), "args": norm(v.args, depth + 1),
                "keywords": norm(v.keywords, depth + 1)}
    if isinstance(v, type) or callable(v) and hasattr(v, "__qualname__"):
        return f"{getattr(v, '__module__', '')}.{v.__qualname__}"
    if hasattr(v, "__dict__"):
        return {type(v).__qualname__: norm(vars(v), depth + 1)}
    return repr(v)


def simple_attrs(model: nn.Module) -> dict:
    return {k: norm(v) for k, v in vars(model).items()
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple, list))}


@contextlib.contextmanager
def regnet_widths_on_cpu():
    """RegNet's BlockParams.from_init_params computes the widths with tensors it reads back: inside the
    meta-device build, it runs on the CPU."""
    saved = vars(regnet.BlockParams)["from_init_params"]
    original = saved.__func__

    def run(cls, *a, **k):
        with torch.device("cpu"):
            return original(cls, *a, **k)

    regnet.BlockParams.from_init_params = classmethod(run)
    try:
        yield
    finally:
        regnet.BlockParams.from_init_params = saved


def probe(name: str, weights) -> dict:
    """Build ``name`` with ``weights`` on the meta device, the checkpoint's download and loading stubbed
    out: the top-level module's constructor arguments, its state_dict shapes and attributes when
    torchvision loads the checkpoint (None: weights=None loads nothing), and after the builder returns."""
    inits: dict[int, tuple] = {}

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "__init__":
            obj = frame.f_locals.get("self")
            if isinstance(obj, nn.Module) and id(obj) not in inits:
                code = frame.f_code
                n = code.co_argcount + code.co_kwonlyargcount
                names = list(code.co_varnames[:n])
                if code.co_flags & inspect.CO_VARARGS:
                    names.append(code.co_varnames[n])
                    n += 1
                if code.co_flags & inspect.CO_VARKEYWORDS:
                    names.append(code.co_varnames[n])
                inits[id(obj)] = (obj, {k: frame.f_locals[k] for k in names if k != "self" and k in frame.f_locals})

    at_load: dict = {}

    def fake_get_state_dict(self, *a, **k):
        return {}

    def fake_load_state_dict(self, state_dict, strict=True, assign=False):
        at_load.update(keys={k: list(v.shape) for k, v in self.state_dict().items()}, attrs=simple_attrs(self),
                       hooks=sorted({type(m).__name__ for m in self.modules()    # torchvision's own, not torch's
                                     if type(m).__module__.startswith("torchvision.")
                                     and type(m)._load_from_state_dict is not nn.Module._load_from_state_dict}))
        return nn.modules.module._IncompatibleKeys([], [])

    saved = WeightsEnum.get_state_dict, nn.Module.load_state_dict
    WeightsEnum.get_state_dict, nn.Module.load_state_dict = fake_get_state_dict, fake_load_state_dict
    try:
        with warnings.catch_warnings(), regnet_widths_on_cpu(), torch.device("meta"):
            warnings.simplefilter("ignore")
            sys.setprofile(hook)
            try:
                model = tvm.get_model(name, weights=weights)
            finally:
                sys.setprofile(None)
    finally:
        WeightsEnum.get_state_dict, nn.Module.load_state_dict = saved
    args = inits[id(model)][1]
    kwargs = args.pop("kwargs", {}) if isinstance(args.get("kwargs"), dict) else {}
    return {"args": {k: norm(v) for k, v in {**args, **kwargs}.items()},
            "at_load": at_load or None,
            "keys": {k: list(v.shape) for k, v in model.state_dict().items()},
            "attrs": simple_attrs(model)}


def overrides_of(name: str, base: dict, got: dict) -> dict:
    """The builder arguments the weights change: constructor arguments that differ from weights=None's,
    then attributes the builder changed after loading that are constructor arguments (googlenet's
    aux_logits)."""
    out = {}
    for k, v in got["args"].items():
        if k in INIT_ONLY or base["args"].get(k, inspect.Parameter.empty) == v:
            continue
        if not isinstance(v, (bool, int, float, str, list)) or isinstance(v, list) and not all(
                isinstance(x, (int, float)) for x in v):
            raise SystemExit(f"{name}: the weights change {k} to {v!r}, which the table cannot hold")
        out[k] = v
    if got["at_load"]:
        for k, v in got["attrs"].items():
            if got["at_load"]["attrs"].get(k) != v:
                if k not in got["args"]:
                    raise SystemExit(f"{name}: after loading, torchvision sets {k}={v!r}, no constructor argument")
                if base["args"].get(k) != v:
                    out[k] = v
                else:
                    out.pop(k, None)
    return out


def load_notes(name: str, got: dict) -> list[str]:
    notes = []
    at = got["at_load"]
    dropped = sorted({k.split(".")[0] for k in at["keys"] if k not in got["keys"]})
    if dropped:
        notes.append(f"the checkpoint holds {', '.join(d + '.*' for d in dropped)} (torchvision builds the model with "
                     f"them to load it strictly, then drops them unless the caller asks for aux_logits=True)")
    for cls in at["hooks"]:
        notes.append(HOOK_NOTES.get(cls, f"torchvision's {cls} overrides _load_from_state_dict"))
    source = inspect.getsource(sys.modules[tvm.get_model_builder(name).__module__])
    plain = "model.load_state_dict(weights.get_state_dict(progress=progress, check_hash=True))"
    if source.count("get_state_dict(") != source.count(plain):
        pattern = re.search(r're\.compile\(\s*r"([^"]+)"', source)
        if "densenet" in name and pattern:
            notes.append(f"the checkpoint names keys the old way: torchvision renames every key matching "
                         f"{pattern.group(1)} to group 1 + group 2 ('...denselayer1.norm.1.weight' -> "
                         f"'...denselayer1.norm1.weight') before loading")
        else:
            raise SystemExit(f"{name}: its builder reads the checkpoint in its own way; look at its source")
    return notes


# ---------------------------------------------------------------- the table


def table() -> tuple[dict, dict, dict]:
    categories: dict[str, list[str]] = {}
    builders: dict[str, dict] = {}
    probes: dict[str, dict] = {}
    for name in tvm.list_models(module=tvm):
        enum = tvm.get_model_weights(name)
        base = probe(name, None)
        entry: dict = {"default": enum.DEFAULT.name, "overrides": {}, "load_notes": [], "weights": {}}
        all_notes = []
        for w in enum:
            meta = w.meta
            file = w.url.rsplit("/", 1)[-1]
            cats = meta.get("categories")
            if cats is None:
                cat_key = None
            else:
                cat_key = next((k for k, v in categories.items() if v == list(cats)), None)
                if cat_key is None:
                    cat_key = "imagenet1k" if not categories else f"{name}.{w.name}"
                    categories[cat_key] = list(cats)
            acc = meta["_metrics"]["ImageNet-1K"]
            got = probe(name, w)
            over = overrides_of(name, base, got)
            all_notes.append(load_notes(name, got))
            entry["weights"][w.name] = {
                "url": w.url, "file": file, "sha256": sha256_prefix(file),
                "transforms": transforms_of(w),
                "categories": cat_key,
                "num_params": meta["num_params"], "min_size": list(meta["min_size"]),
                "acc1": number(acc["acc@1"]), "acc5": number(acc["acc@5"]),
                "gflops": number(meta["_ops"]), "file_size_mb": number(meta["_file_size"]),
                "recipe": meta.get("recipe"), "license": meta.get("license"),
                "docs": " ".join(meta.get("_docs", "").split()),
                "overrides": over,
            }
            if w is enum.DEFAULT:
                entry["overrides"] = over
                probes[name] = got
        if any(n != all_notes[0] for n in all_notes):
            raise SystemExit(f"{name}: its weights load differently: {all_notes}")
        entry["load_notes"] = all_notes[0]
        builders[name] = entry
        print(f"{name:20s} {len(entry['weights'])} weights, default {entry['default']}, overrides {entry['overrides']}",
              file=sys.stderr)
    return categories, builders, probes


# ---------------------------------------------------------------- checks against archc (main environment)


def main_python(code: str, *args: str) -> str:
    """Run ``code`` with the main environment's python3 (archc's dependencies), from the repository root."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([os.environ.get("ARCHC_PYTHON", "python3"), "-c", code, *args], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True).stdout


ZOO_AND_PARAMS = r"""
import json, sys
import archcompiler
from archcompiler.spec import zoo
todo = json.loads(sys.argv[1])
out = {"zoo": list(zoo.builders()), "params": {}}
for name, inputs in todo.items():
    for size in inputs:
        over = {"input": [3, size, size]} if size else None
        t = archcompiler.analyze(archcompiler.load_spec(name, over))["total"]
        out["params"][f"{name}@{size}"] = [t["params"], t["with_training_heads"]["params"]]
print(json.dumps(out))
"""

KEYS = r"""
import json, sys, torch
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["state_dict"]
print(json.dumps({k: list(v.shape) for k, v in sd.items()}))
"""


def archc_keys(name: str, *flags: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pt = Path(tmp) / f"{name}.pt"
        subprocess.run(["archc", "build", name, "-o", str(pt), "--quiet", *flags], cwd=ROOT, check=True,
                       capture_output=True, text=True)
        return json.loads(main_python(KEYS, str(pt)))


def torchvision_keys(name: str, **kwargs) -> dict:
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = tvm.get_model(name, weights=None, **kwargs)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def compare_keys(a: dict, b: dict) -> str:
    if list(a) == list(b) and a == b:
        return f"{len(a)} keys equal, in order, with equal shapes"
    if set(a) == set(b) and all(a[k] == b[k] for k in a):
        return f"{len(a)} keys equal with equal shapes (order differs)"
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    shapes = [k for k in set(a) & set(b) if a[k] != b[k]]
    return (f"DIFFER: {len(only_a)} only in archc {only_a[:3]}, {len(only_b)} only in torchvision {only_b[:3]}, "
            f"{len(shapes)} shapes {sorted(shapes)[:3]}")


def checks(builders: dict, probes: dict) -> list[str]:
    found = []
    # the sizes at which to count archc's parameters: the spec's own input, or the one the weights set
    todo: dict[str, list] = {}
    for name, entry in builders.items():
        for w in entry["weights"].values():
            size = w["overrides"].get("image_size")
            todo.setdefault(name, [])
            if size not in todo[name]:
                todo[name].append(size)
    got = json.loads(main_python(ZOO_AND_PARAMS, json.dumps(todo)))
    zoo = set(got["zoo"])
    only_tv, only_archc = sorted(set(builders) - zoo), sorted(zoo - set(builders))
    found.append(f"zoo: {len(builders)} torchvision builders, {len(zoo)} in archc's zoo"
                 + (f"; only in torchvision: {only_tv}" if only_tv else "")
                 + (f"; only in archc: {only_archc}" if only_archc else "") + ("; the same names" if zoo == set(builders) else ""))
    counted, heads, wrong = 0, [], []
    for name, entry in builders.items():
        for wname, w in entry["weights"].items():
            plain, with_heads = got["params"][f"{name}@{w['overrides'].get('image_size')}"]
            counted += 1
            if w["num_params"] == plain:
                continue
            if w["num_params"] == with_heads:
                heads.append(f"{name}.{wname}")
            else:
                wrong.append(f"{name}.{wname} ({w['num_params']} vs archc {plain})")
    found.append(f"num_params: {counted} weights entries compared with archcompiler.analyze (at the image_size "
                 f"the weights set); {counted - len(heads) - len(wrong)} equal its total"
                 + (f", {len(heads)} its total with the training-only heads ({', '.join(heads)})" if heads else "")
                 + (f"; DIFFER: {', '.join(wrong)}" if wrong else ""))
    for name in KEY_CHECK:
        over = builders[name]["overrides"]
        at_load = probes[name]["at_load"]["keys"]
        final = probes[name]["keys"]
        if at_load != final:      # googlenet: the checkpoint has the heads the returned model drops
            load_args = {k: v for k, v in over.items() if k != "aux_logits"}
            ck = compare_keys(archc_keys(name), torchvision_keys(name, **load_args, aux_logits=True))
            fin = compare_keys(archc_keys(name, "--drop-training-heads"), torchvision_keys(name, **over))
            found.append(f"keys {name}: archc build (with its training heads) vs torchvision weights=None "
                         f"{json.dumps({**load_args, 'aux_logits': True})} (the model the checkpoint loads into): {ck}; "
                         f"archc build --drop-training-heads vs weights=None {json.dumps(over)} (the model torchvision "
                         f"returns): {fin}")
        else:
            found.append(f"keys {name}: archc build vs torchvision weights=None {json.dumps(over)}: "
                         f"{compare_keys(archc_keys(name), torchvision_keys(name, **over))}")
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", type=Path, default=OUT)
    p.add_argument("--no-checks", action="store_true", help="skip the comparisons with archc")
    args = p.parse_args()
    if (torchvision.__version__.split("+")[0], torch.__version__.split("+")[0]) != ("0.29.1", "2.14.1"):
        print(f"warning: torchvision {torchvision.__version__}, torch {torch.__version__} (the table is made with "
              f"0.29.1 and 2.14.1)", file=sys.stderr)
    categories, builders, probes = table()
    found = [] if args.no_checks else checks(builders, probes)
    for line in found:
        print(line, file=sys.stderr)
    script = Path(__file__).resolve().relative_to(ROOT).as_posix()
    about = (f"torchvision {torchvision.__version__.split('+')[0]}'s published ImageNet-1K classification weights "
             f"(torch {torch.__version__.split('+')[0]}), from each weights enum's metadata and transforms, "
             f"written by {script} on {datetime.date.today().isoformat()}; no weights were downloaded. "
             f"'overrides': the builder arguments torchvision changes when given the weights (the builder's: its "
             f"DEFAULT weights'); 'load_notes': what torchvision does to the checkpoint or the model around "
             f"loading. Checks against archc: " + " | ".join(found or ["not run (--no-checks)"]))
    doc = {"about": about, "categories": categories, "builders": builders}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    n = sum(len(b["weights"]) for b in builders.values())
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB): {len(builders)} builders, {n} weights",
          file=sys.stderr)


if __name__ == "__main__":
    main()
