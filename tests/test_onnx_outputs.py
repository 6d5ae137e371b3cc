"""import_onnx's outputs: an ``Outputs`` record (the spec, the weights, whether the spec is written), or a spec
path alone (the weights written beside it, the spec not written)."""

from __future__ import annotations

import pytest


def _conv_file(path):
    """A one-Conv ONNX file: 1 x 2 x 4 x 4 -> 1 x 3 x 4 x 4."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    value = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 4]),
             helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])]
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w", "b"], ["logits"], pads=[1, 1, 1, 1])],
                              "g", value[:1], value[1:],
                              [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w"),
                               numpy_helper.from_array(np.zeros(3, np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_spec_path_alone_writes_the_weights_beside_it_and_not_the_spec(tmp_path):
    from archcompiler.importers.onnx import import_onnx

    text = import_onnx(_conv_file(tmp_path / "c.onnx"), str(tmp_path / "c.yaml"), verify=False)
    assert "op: conv" in text
    assert (tmp_path / "c.safetensors").is_file() and not (tmp_path / "c.yaml").exists()


def test_outputs_write_the_spec_and_the_weights_where_they_say(tmp_path):
    from archcompiler.importers.onnx import Outputs, import_onnx

    spec, weights = tmp_path / "s.yaml", tmp_path / "w" / "net.safetensors"
    weights.parent.mkdir()
    text = import_onnx(_conv_file(tmp_path / "c.onnx"), Outputs(str(spec), str(weights), write_spec=True),
                       verify=False)
    assert spec.read_text(encoding="utf-8") == text and "--weights net.safetensors" in text
    assert weights.is_file() and not (tmp_path / "s.safetensors").exists()
