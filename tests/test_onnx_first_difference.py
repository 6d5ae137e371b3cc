"""An ONNX import that computes something else than onnxruntime running the file is refused, naming the
first layer whose output differs and the file's node that computes it (issue #32); and what the reader
once read wrongly (a BatchNormalization or Dropout in training mode) is refused by name.

Every file is made here with onnx.helper; the CLI runs in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_archc

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def chain(folder: Path, bn: dict | None = None, dropout_training: bool | None = None) -> Path:
    """input 1x3x8x8 -> conv1 -> bn (BatchNormalization, attributes ``bn``) -> Tanh -> conv2 -> Relu ->
    conv3 [-> Dropout with that training_mode]: layers with weights on both sides of a weightless one."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, low: float | None = None) -> onnx.TensorProto:
        arr = rng.uniform(low, 1.5, shape) if low is not None else rng.standard_normal(shape) / 3
        return numpy_helper.from_array(arr.astype(np.float32), name)
    inits = [init("conv1.weight", 4, 3, 3, 3), init("conv1.bias", 4), init("bn.weight", 4, low=0.5), init("bn.bias", 4),
             init("bn.running_mean", 4), init("bn.running_var", 4, low=0.5), init("conv2.weight", 4, 4, 3, 3),
             init("conv2.bias", 4), init("conv3.weight", 4, 4, 1, 1)]
    outputs = ["b", "mean", "var"] if (bn or {}).get("training_mode") else ["b"]
    nodes = [helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["a"], name="/conv1/Conv", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["a", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                              outputs, name="/bn/BatchNormalization", **(bn or {})),
             helper.make_node("Tanh", ["b"], ["t"], name="/act/Tanh"),
             helper.make_node("Conv", ["t", "conv2.weight", "conv2.bias"], ["c"], name="/conv2/Conv", pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
             helper.make_node("Conv", ["r", "conv3.weight"], ["y"], name="/conv3/Conv")]
    if dropout_training is not None:
        inits += [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
                  numpy_helper.from_array(np.array(dropout_training), "training")]
        nodes.append(helper.make_node("Dropout", ["y", "ratio", "training"], ["z"], name="/drop/Dropout"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path = folder / "m.onnx"
    onnx.save(model, str(path))
    return path


def _one_line_refusal(result: subprocess.CompletedProcess, folder: Path) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert not (folder / "m.yaml").exists() and not (folder / "m.safetensors").exists()
    return result.stderr


def test_a_batch_norm_in_training_mode_is_refused_by_name(tmp_path):
    """BatchNormalization with training_mode 1 normalizes by the batch's statistics (onnxruntime does so);
    archc's batch_norm reads the running ones: it was read as if in inference, now refused."""
    err = _one_line_refusal(run_archc("import", str(chain(tmp_path, {"training_mode": 1})), "-o",
                                      str(tmp_path / "m.yaml")), tmp_path)
    assert "node /bn/BatchNormalization (BatchNormalization): training_mode 1" in err, err


@pytest.mark.parametrize("training", [True, False])
def test_a_dropout_in_training_mode_is_refused_by_name(tmp_path, training):
    """A Dropout whose training_mode input is true zeroes values at random (onnxruntime does so); a constant
    false passes its input: the file imports, verified against onnxruntime."""
    result = run_archc("import", str(chain(tmp_path, dropout_training=training)), "-o", str(tmp_path / "m.yaml"))
    if not training:
        assert result.returncode == 0, result.stderr
        assert "verified" in result.stderr and "(onnxruntime)" in result.stderr
        return
    err = _one_line_refusal(result, tmp_path)
    assert "node /drop/Dropout (Dropout): a Dropout in training mode" in err, err


# archc's CLI in a fresh process, with one ONNX mapping made wrong first: Tanh read as a sigmoid (same shapes,
# no weights, other values): what a reader's bug would do, which onnxruntime's values must catch
_WRONG_READER = """
import sys
from archcompiler.ops import FromOnnx, registry
registry().from_onnx["Tanh"] = FromOnnx(lambda n: {"op": "sigmoid"})
from archcompiler.cli import entry
sys.argv[0] = "archc"
entry()
"""


def test_an_import_that_differs_names_its_first_layer_and_the_files_node(tmp_path):
    """The spec with blocks differs, the flat one too: refused in one line naming the first compared layer
    whose output differs (conv2: the Tanh before it has no weights to compare), the file's node computing it,
    and the layer before it whose output agrees (bn)."""
    driver = tmp_path / "driver.py"
    driver.write_text(_WRONG_READER)
    path = chain(tmp_path)
    result = subprocess.run([sys.executable, str(driver), "import", str(path), "-o", str(tmp_path / "m.yaml")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = _one_line_refusal(result, tmp_path)
    assert "computes something else than the file (onnxruntime)" in err, err
    assert "the first layer whose output differs is conv2, computed by the file's node /conv2/Conv (Conv), " \
           "after bn, whose output agrees" in err, err
    assert len(err.strip().splitlines()) == 1, err
