"""archc import of timm's models, through the command line, in a fresh process each (issue #32's public list).

Run in a side environment that has timm (never a dependency of archc), for example:

    python -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm
    /tmp/tvenv/bin/pip install --no-deps -e . && /tmp/tvenv/bin/pip install pydantic PyYAML google-re2 networkx \
        graphviz Pillow matplotlib tqdm safetensors
    /tmp/tvenv/bin/python benchmarks/import_timm.py [--models a,b,...] [--out results.json]

Each model: ``archc import timm:create_model --arg model_name=NAME --arg pretrained=false --input CxHxW``
(archc verifies the spec it writes against the module: exit 0 means built, loaded strictly and equal on a
seeded input with BatchNorm statistics perturbed); then, independently here, the spec is built, timm's
``state_dict`` (BatchNorm statistics perturbed) loaded strictly, and the logits compared (within 1e-4 of the
largest). The outcome per model: exact, refused (the reason's first line), wrong, or crashed (a traceback).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PUBLIC = """resnet50d resnet26t seresnext26d_32x4d regnetz_b16 efficientnet_b0 tf_efficientnet_b0 mixnet_s
mobilenetv3_large_100 mobilenetv4_conv_small ghostnet_100 rexnet_100 densenet121 dla34 dpn68 hrnet_w18_small
cspdarknet53 cspresnet50 darknet53 vovnet39a ese_vovnet19b_dw selecsls42b res2net50_26w_4s resnest14d skresnet18
nfnet_l0 nf_resnet26 repvgg_a0 convnext_atto convnextv2_atto efficientformer_l1 levit_128s mobilevit_xxs
vit_tiny_patch16_224 deit_tiny_patch16_224 deit_tiny_distilled_patch16_224 beit_base_patch16_224
eva02_tiny_patch14_224 swin_tiny_patch4_window7_224 maxvit_tiny_rw_224 coatnet_0_rw_224 poolformer_s12
mixer_b16_224 resmlp_12_224 fastvit_t8 edgenext_xx_small inception_v3 xception41 cait_xxs24_224 lcnet_050
hgnetv2_b0 regnety_002""".split()


def check(name: str, spec: Path) -> tuple[str, float]:
    """Build the spec, load timm's weights (BatchNorm statistics perturbed) strictly, compare the logits."""
    import timm
    import torch

    import archcompiler

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    state = model.state_dict()
    gen = torch.Generator().manual_seed(1)
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=gen) + 0.5
        elif k.endswith("running_mean"):
            state[k] = torch.randn(v.shape, generator=gen) * 0.1
    for k, v in state.items():          # trained-like: a zero-initialised head (MLP-Mixer's) hides the body
        if v.is_floating_point() and not k.endswith(("running_var", "running_mean")):
            state[k] = v + torch.randn(v.shape, generator=gen) * 0.02
    model.load_state_dict(state)
    built = archcompiler.build(archcompiler.load_spec(spec), check_memory=False).eval()
    built.load_state_dict(state, strict=True)
    size = model.pretrained_cfg["input_size"]
    x = torch.randn((2, *size), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model(x), built(x)
    diff = float((want - got).abs().max() / want.abs().max())
    return ("exact" if diff <= 1e-4 else "wrong"), diff


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(PUBLIC))
    p.add_argument("--out", default=None)
    p.add_argument("--timeout", type=int, default=600)
    args = p.parse_args()
    import timm

    rows = []
    work = Path(tempfile.mkdtemp(prefix="archc-timm-"))
    for name in args.models.split(","):
        size = timm.create_model(name, pretrained=False).pretrained_cfg["input_size"]
        spec = work / f"{name}.yaml"
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "archcompiler", "import", "timm:create_model", "--arg",
                                   f"model_name={name}", "--arg", "pretrained=false", "--input",
                                   "x".join(map(str, size)), "-o", str(spec)],
                                  capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rows.append({"model": name, "outcome": "timeout", "seconds": args.timeout})
            print(f"{name:36s} timeout", flush=True)
            continue
        seconds = time.perf_counter() - start
        row = {"model": name, "seconds": round(seconds, 1), "input": list(size)}
        if done.returncode != 0:
            crashed = "Traceback" in done.stderr or "internal error" in done.stderr
            row["outcome"] = "crashed" if crashed else "refused"
            row["why"] = done.stderr.strip().splitlines()[0][:300] if done.stderr.strip() else "?"
        else:
            row["notes"] = [line for line in done.stderr.splitlines() if line.startswith("archc:")]
            try:
                row["outcome"], row["difference"] = check(name, spec)
            except Exception as exc:  # noqa: BLE001
                row["outcome"], row["why"] = "wrong", f"{type(exc).__name__}: {str(exc)[:200]}"
            row["lines"] = len(spec.read_text().splitlines())
        rows.append(row)
        print(f"{name:36s} {row['outcome']:8s} {row['seconds']:6.1f} s  {row.get('why', '')[:150]}", flush=True)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print(json.dumps(counts))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
