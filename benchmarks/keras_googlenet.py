"""The project's first network, GoogLeNet as its first user wrote it in Keras 3, against archc's
`specs/googlenet-keras.yaml` (issue #32): the same weights, the same outputs.

Run in a side environment with Keras 3 on the torch backend (Keras is never a dependency of archc):

    /tmp/tvenv/bin/pip install keras && KERAS_BACKEND=torch /tmp/tvenv/bin/python benchmarks/keras_googlenet.py

The Keras model is written from ../shared/reference/README.md ("The original Keras GoogLeNet"): padding
'same' everywhere, stride-2 convolutions and pools included. Its weights (seeded, biases too) are copied
into the module archc builds from the spec (Keras's kernels are H x W x in x out, torch's out x in x H x W;
the Dense kernel in x out), and both run on one seeded batch (Keras in NHWC, archc in NCHW). With
``--onnx`` it also exports the Keras model to ONNX (``model.export(path, format="onnx")``) and imports that
file with ``archc import``, comparing the import's outputs with onnxruntime's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = Path(__file__).resolve().parents[1]
INCEPTIONS = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "4a": (192, 96, 208, 16, 48, 64),
              "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
              "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
              "5b": (384, 192, 384, 48, 128, 128)}


def keras_googlenet(classes: int = 10):
    import keras
    from keras import layers

    def conv(x, n, k, s=1, name=None):
        return layers.Conv2D(n, k, strides=s, padding="same", activation="relu", name=name)(x)

    def inception(x, name, a, b_r, b, c_r, c, p):
        b1 = conv(x, a, 1, name=f"inception_{name}_1x1")
        b2 = conv(conv(x, b_r, 1, name=f"inception_{name}_3x3_reduce"), b, 3, name=f"inception_{name}_3x3")
        b3 = conv(conv(x, c_r, 1, name=f"inception_{name}_5x5_reduce"), c, 5, name=f"inception_{name}_5x5")
        b4 = layers.MaxPooling2D(3, strides=1, padding="same")(x)
        b4 = conv(b4, p, 1, name=f"inception_{name}_pool_proj")
        return layers.Concatenate(axis=-1)([b1, b2, b3, b4])

    inputs = keras.Input((224, 224, 3))
    x = conv(inputs, 64, 7, 2, name="conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = conv(x, 192, 3, name="conv2")
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage, pool in (("3", True), ("4", True), ("5", False)):
        for name, args in INCEPTIONS.items():
            if name.startswith(stage):
                x = inception(x, name, *args)
        if pool:
            x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(classes, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="googlenet_keras")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--onnx", action="store_true", help="also export to ONNX and import it with archc import")
    args = p.parse_args()
    import keras
    import numpy as np
    import torch

    import archcompiler

    keras.utils.set_random_seed(0)
    model = keras_googlenet()
    rng = np.random.default_rng(0)
    for layer in model.layers:        # seeded weights, biases too (Keras's zero biases hide a misplaced bias)
        if layer.weights:
            layer.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in layer.get_weights()])
    keras_params = model.count_params()
    built = archcompiler.build(str(ROOT / "specs" / "googlenet-keras.yaml")).eval()
    state = built.state_dict()
    copied = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        name = layer.name             # inception_3a_3x3_reduce -> the module path inception_3a.n3x3_reduce
        if name.startswith("inception_"):
            branch = name[len("inception_3a_"):]
            name = f"{name[:len('inception_3a')]}.{'n' + branch if branch[0].isdigit() else branch}"
        weight = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        copied[f"{name}.weight"], copied[f"{name}.bias"] = torch.from_numpy(weight.copy()), torch.from_numpy(bias)
    missing = sorted(set(state) - set(copied))
    assert not missing, f"no Keras weights for {missing[:5]}"
    built.load_state_dict(copied, strict=True)
    x = rng.normal(size=(2, 224, 224, 3)).astype("float32")
    want = model(x, training=False)
    want = np.asarray(want.detach().cpu() if hasattr(want, "detach") else want)
    with torch.no_grad():
        logits = built(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        got = built.predict_proba(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy() \
            if hasattr(built, "predict_proba") else torch.softmax(logits, 1).numpy()
    archc_params = sum(p.numel() for p in built.parameters())
    print(f"params: Keras {keras_params:,}, archc {archc_params:,}")
    print(f"largest difference of the class probabilities: {np.abs(want - got).max():.2e} "
          f"(largest probability {np.abs(want).max():.3f})")
    if not args.onnx:
        return
    folder = Path(tempfile.mkdtemp(prefix="archc-keras-"))
    path = folder / "googlenet_keras.onnx"
    model.export(str(path), format="onnx")
    done = subprocess.run([sys.executable, "-m", "archcompiler", "import", str(path), "-o", str(folder / "k.yaml")],
                          capture_output=True, text=True)
    print("archc import of Keras's ONNX export:", done.returncode, (done.stderr or done.stdout).strip()[:400])
    if done.returncode:
        return
    imported = archcompiler.build(str(folder / "k.yaml"), weights=str(folder / "k.safetensors")).eval()
    with torch.no_grad():
        got = imported.predict_proba(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    print(f"the imported spec against Keras itself: params {sum(p.numel() for p in imported.parameters()):,}, "
          f"largest difference of the class probabilities {np.abs(want - got).max():.2e}")


if __name__ == "__main__":
    main()
