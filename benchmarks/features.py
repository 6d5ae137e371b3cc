"""Feature maps (issue #34): `archc build NAME --features ...` against torchvision's own intermediate
outputs under the same weights, and the shapes against timm's `features_only`.

Run in the side environment (torchvision and timm are never dependencies of archc):

    /tmp/tvenv/bin/python benchmarks/features.py

For each builder, the archc feature extractor loads the torchvision model's `state_dict` (the whole
network's: the layers after the last feature are left out) and both run on one seeded batch in eval
mode. torchvision's maps come from forward hooks on its modules (a vision transformer's encoder block
gives tokens: the class token dropped and the rest laid out as a map, as timm does; a Swin stage gives
N x H x W x C: permuted to N x C x H x W). Stage indices are checked against timm's `feature_info` of
the matching timm model (channels and reduction per stage).
"""

from __future__ import annotations

import sys

import torch

# builder, the features by stage index, torchvision's module of each stage, timm's model
CASES = [
    ("resnet50", [0, 1, 2, 3, 4], ["relu", "layer1", "layer2", "layer3", "layer4"], "resnet50"),
    ("mobilenet_v3_large", [0, 1, 2, 3, 4], ["features.1", "features.3", "features.6", "features.12", "features.16"],
     "mobilenetv3_large_100"),
    ("convnext_tiny", [0, 1, 2, 3], ["features.1", "features.3", "features.5", "features.7"], "convnext_tiny"),
    ("swin_t", [0, 1, 2, 3], ["features.1", "features.3", "features.5", "features.7"], "swin_tiny_patch4_window7_224"),
    ("vit_b_16", [9, 10, 11], [f"encoder.layers.encoder_layer_{i}" for i in (9, 10, 11)], "vit_base_patch16_224"),
]


def as_map(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 3:                           # ViT tokens: drop the class token, lay out as a map
        n, s, d = t.shape
        side = int((s - 1) ** 0.5)
        return t[:, 1:].reshape(n, side, side, d).permute(0, 3, 1, 2)
    if name.startswith("swin"):               # N x H x W x C
        return t.permute(0, 3, 1, 2)
    return t


def main() -> int:
    import timm
    import torchvision

    import archcompiler

    worst = 0.0
    for builder, indices, modules, timm_name in CASES:
        tv = torchvision.models.get_model(builder, weights=None).eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in tv.state_dict().values():
                if p.dtype.is_floating_point:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if p.dim() == 1 else 0.0))
        seen: dict[str, torch.Tensor] = {}
        for m in modules:
            tv.get_submodule(m).register_forward_hook(lambda mod, i, o, name=m, seen=seen: seen.__setitem__(name, o))
        model = archcompiler.build(builder, {"features": indices}).eval()
        model.load_state_dict({k: v for k, v in tv.state_dict().items() if k in model.state_dict()}, strict=True)
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            tv(x)
            out = model(x)
        info = timm.create_model(timm_name, pretrained=False, features_only=True,
                                 out_indices=tuple(range(len(timm.create_model(timm_name).feature_info))))
        timm_stages = [(c, r) for c, r in zip(info.feature_info.channels(), info.feature_info.reduction())]
        timm_stages = [timm_stages[i] for i in indices]
        for (key, got), m, (channels, reduction) in zip(out.items(), modules, timm_stages):
            want = as_map(builder, seen[m])
            diff = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
            worst = max(worst, diff)
            same = tuple(got.shape[1:]) == tuple(want.shape[1:]) and got.shape[1] == channels \
                and 224 // got.shape[2] == reduction
            print(f"{builder:20s} {key:34s} {tuple(got.shape[1:])!s:16s} torchvision {m:32s} rel. diff {diff:.1e}; "
                  f"timm {channels} ch, stride {reduction}: {'same' if same else 'DIFFERENT'}")
            if not same:
                worst = float("inf")
    print(f"largest difference relative to the largest value: {worst:.1e}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
