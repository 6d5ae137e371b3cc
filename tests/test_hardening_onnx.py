"""archc import of a hostile or malformed ONNX file (issue #30): every refusal is exit 1 with one located
line naming what is wrong, never an internal error (exit 3) or a traceback, never a terminal escape from
the file, never a file left behind, never an input changed.

Every hostile file is made here (in tmp_path) from a valid tiny model: input 1x3x8x8 -> Conv 4 3x3 ->
Relu -> GlobalAveragePool -> Flatten -> Gemm 2, with one field changed; the real CLI runs in a fresh
process."""

from __future__ import annotations

import hashlib
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, no_hang, run_archc

onnx = pytest.importorskip("onnx")
np = pytest.importorskip("numpy")
from onnx import TensorProto, external_data_helper, helper, numpy_helper  # noqa: E402


def tiny(folder: Path, mutate=None, conv: dict | None = None, weight_shape=(4, 3, 3, 3), conv_name: str = "conv",
         name: str = "m.onnx") -> Path:
    """The tiny model, its Conv's attributes updated by ``conv``, then ``mutate(model)``; saved as ``name``."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(weight_shape).astype(np.float32), "conv.weight"),
             numpy_helper.from_array(np.zeros(4, np.float32), "conv.bias"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "fc.weight"),
             numpy_helper.from_array(np.zeros(2, np.float32), "fc.bias")]
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **(conv or {})}
    nodes = [helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["c"], name=conv_name, **attrs),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if mutate is not None:
        mutate(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under ``folder``: a regular file by its sha256 (a big sparse one by size and mtime), a
    link by its target, anything else (a FIFO: never opened) by its type."""
    out: dict[str, object] = {}
    for root, dirs, files in os.walk(folder):
        for entry in [*dirs, *files]:
            p = Path(root) / entry
            st = os.lstat(p)
            key = str(p.relative_to(folder))
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[key] = (st.st_size, st.st_mtime_ns) if st.st_size > 64 * 2 ** 20 else \
                    hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[key] = stat.S_IFMT(st.st_mode)
    return out


def check_refused(result: subprocess.CompletedProcess, *needles: str, where: str | Path | None = None) -> str:
    """Exit 1, one line on stderr (located at ``where`` when given) holding every needle; no traceback,
    no internal error, no raw control character."""
    err = result.stderr
    assert result.returncode == 1, f"exit {result.returncode}: {err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert not any(ord(c) < 32 and c not in "\n" or 0x7f <= ord(c) < 0xa0 for c in err), repr(err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    if where is not None:
        assert lines[0].startswith(f"{where}: "), lines[0]
    return lines[0]


def refused(tmp_path: Path, model: Path, *needles: str, args=(), env=None, where: str | Path | None = "model"):
    """archc import MODEL -o tmp_path/out/x.yaml ARGS: refused, and nothing under tmp_path written or changed."""
    before = snapshot(tmp_path)
    out = tmp_path / "out" / "x.yaml"
    with no_hang(120):
        r = run_archc("import", str(model), "-o", str(out), *args, env=env)
    line = check_refused(r, *needles, where=model if where == "model" else where)
    assert snapshot(tmp_path) == before, "a refused import wrote or changed a file"
    return line


def test_a_valid_tiny_model_imports(tmp_path):
    """The control: the unmutated model imports (exit 0) and writes the spec and its weights."""
    model = tiny(tmp_path)
    r = run_archc("import", str(model), "-o", str(tmp_path / "x.yaml"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.yaml").is_file() and (tmp_path / "x.safetensors").is_file()


def test_without_the_onnx_package_import_says_what_to_install(tmp_path):
    fake = tmp_path / "fake" / "onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('onnx is not installed here')\n")
    model = tiny(tmp_path / "m")
    env = {"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    refused(tmp_path, model, "needs the onnx package", "pip install 'archcompiler[onnx]'", env=env)


def _tensor(model, name="conv.weight"):
    return next(t for t in model.graph.initializer if t.name == name)


def _set(**fields):
    def mutate(model):
        t = _tensor(model)
        for key, value in fields.items():
            if key == "dims":
                del t.dims[:]
                t.dims.extend(value)
            else:
                setattr(t, key, value)
    return mutate


def _raw(change):
    def mutate(model):
        t = _tensor(model)
        t.raw_data = change(t.raw_data)
    return mutate


@pytest.mark.parametrize("mutate, needles", [
    (_set(dims=[0, 3, 3, 3]), ["FLOAT [0, 3, 3, 3]", "raw_data is 432 bytes"]),
    (_set(data_type=999), ["data type 999 [4, 3, 3, 3]", "numbers only"]),
    (_set(data_type=TensorProto.UNDEFINED), ["UNDEFINED [4, 3, 3, 3]", "numbers only"]),
    (_set(data_type=TensorProto.STRING), ["STRING [4, 3, 3, 3]", "numbers only"]),
    (_set(data_type=TensorProto.COMPLEX128), ["COMPLEX128 [4, 3, 3, 3]", "numbers only"]),
    (_set(data_type=TensorProto.FLOAT16), ["FLOAT16 [4, 3, 3, 3]", "raw_data is 432 bytes", "216 bytes"]),
    (_raw(lambda b: b[:-7]), ["FLOAT [4, 3, 3, 3]", "raw_data is 425 bytes", "432 bytes"]),
    (_raw(lambda b: b + bytes(1000)), ["FLOAT [4, 3, 3, 3]", "raw_data is 1432 bytes"]),
    (_raw(lambda b: b""), ["FLOAT [4, 3, 3, 3]", "raw_data is 0 bytes"]),
], ids=["dims-0", "type-999", "undefined", "string", "complex128", "float16-of-float32-bytes", "7-bytes-short",
        "1000-bytes-long", "empty-raw-data"])
def test_a_malformed_initializer_is_refused_by_name_type_and_shape(tmp_path, mutate, needles):
    model = tiny(tmp_path / "m", mutate)
    refused(tmp_path, model, "initializer 'conv.weight' (", *needles)


def test_an_empty_weight_is_refused_at_its_node(tmp_path):
    """Dims with a 0 and no numbers: a consistent empty tensor, read as data, refused where a layer takes it."""
    model = tiny(tmp_path / "m", _set(dims=[0, 3, 3, 3], raw_data=b""))
    refused(tmp_path, model, "node conv (Conv)", "empty weight")


def test_a_model_path_that_is_no_file_says_what_it_is(tmp_path):
    (tmp_path / "loop.onnx").symlink_to("loop.onnx")
    (tmp_path / "folder.onnx").mkdir()
    os.mkfifo(tmp_path / "fifo.onnx")          # never opened: a read would wait for a writer forever
    (tmp_path / "zero.onnx").symlink_to("/dev/zero")
    for name, needle in [("loop.onnx", "symbolic link that leads back to itself"), ("folder.onnx", "is a folder"),
                         ("fifo.onnx", "is not a regular file: it is a named pipe"),
                         ("zero.onnx", "is not a regular file: it is a character device"),
                         ("missing.onnx", "does not exist")]:
        refused(tmp_path, tmp_path / name, needle)


def test_an_output_that_is_a_symbolic_link_loop_is_refused(tmp_path):
    model = tiny(tmp_path / "m")
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    for args in (["-o", str(tmp_path / "loop.yaml"), "--weights", str(tmp_path / "w.safetensors")],
                 ["-o", str(tmp_path / "x.yaml"), "--weights", str(tmp_path / "loop.yaml")]):
        before = snapshot(tmp_path)
        check_refused(run_archc("import", str(model), *args), "leads back to itself", where=tmp_path / "loop.yaml")
        assert snapshot(tmp_path) == before


def _external_model(folder: Path) -> Path:
    model = onnx.load_model_from_string(tiny(folder).read_bytes())
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="m.onnx.data",
                                                        size_threshold=0)
    onnx.save(model, str(folder / "m.onnx"))
    assert (folder / "m.onnx.data").is_file()
    return folder / "m.onnx"


def test_outputs_never_replace_the_models_external_data_nor_each_other(tmp_path):
    model = _external_model(tmp_path / "m")
    data = tmp_path / "m" / "m.onnx.data"
    r = run_archc("import", str(model), "-o", str(tmp_path / "ok.yaml"))
    assert r.returncode == 0, r.stderr           # the control: external data beside the model is read
    for f in ("ok.yaml", "ok.safetensors"):
        (tmp_path / f).unlink()
    for args, needles in [(["-o", str(data)], ["-o", "the model's external data", "will not write over it"]),
                          (["-o", str(tmp_path / "x.yaml"), "--weights", str(data)],
                           ["--weights", "the model's external data"]),
                          (["-o", str(tmp_path / "x.yaml"), "--weights", str(tmp_path / "x.yaml")],
                           ["-o and --weights both name"]),
                          (["-o", str(tmp_path / "m")], ["is a folder"])]:
        before = snapshot(tmp_path)
        r = run_archc("import", str(model), *args)
        check_refused(r, *needles)
        assert snapshot(tmp_path) == before, args


def test_a_refused_output_leaves_no_weights_behind(tmp_path):
    """The weights file is written only once the spec can be too: a spec path under a file (not a folder)
    or in a place that cannot be written refuses the import and leaves no .safetensors."""
    model = tiny(tmp_path / "m")
    (tmp_path / "afile").write_text("a file, not a folder\n")
    places = [tmp_path / "afile" / "x.yaml"]
    if os.path.isdir("/proc"):
        places.append(Path("/proc/archc-hardening-test/x.yaml"))     # not writable, even by root
    for spec in places:
        before = snapshot(tmp_path)
        r = run_archc("import", str(model), "-o", str(spec), "--weights", str(tmp_path / "w.safetensors"))
        check_refused(r, "cannot write", where=spec)
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["hard link", "symbolic link"])
def test_external_data_that_is_a_link_to_a_file_elsewhere_is_refused(tmp_path, how):
    model = _external_model(tmp_path / "m")
    data = tmp_path / "m" / "m.onnx.data"
    (tmp_path / "outside").mkdir()
    elsewhere = tmp_path / "outside" / "secret.bin"
    data.rename(elsewhere)
    os.link(elsewhere, data) if how == "hard link" else data.symlink_to(elsewhere)
    refused(tmp_path, model, "external data 'm.onnx.data'", "hard links" if how == "hard link" else "symbolic link")


def test_a_big_file_of_zeros_is_refused_before_it_is_read(tmp_path):
    """1.9 GB of zeros (sparse: no disk used) is refused from its first bytes: the process stays small
    (under an address-space limit of 1.5 GB, which reading it whole would break)."""
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(1_900_000_000)
    before = snapshot(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))
    with open(tmp_path.parent / f"{tmp_path.name}.err", "w+") as err, no_hang(120):
        p = subprocess.Popen([sys.executable, "-m", "archcompiler", "import", str(big), "-o", str(tmp_path / "x.yaml")],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    os.unlink(tmp_path.parent / f"{tmp_path.name}.err")
    check_refused(subprocess.CompletedProcess(p.args, p.returncode, "", stderr), "not a readable ONNX model",
                  "first bytes (00 00", where=big)
    # (under the 1.5 GB address-space limit, reading the 1.9 GB file whole would end in a MemoryError, not this
    # refusal; the child's ru_maxrss is no measure here: Linux carries the forking worker's peak across exec)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("conv, needle", [({"strides": [0, 0]}, "strides [0, 0]"),
                                          ({"dilations": [0, 0]}, "dilations [0, 0]"),
                                          ({"pads": [-1, -1, -1, -1]}, "negative pads")],
                         ids=["stride-0", "dilation-0", "negative-pads"])
def test_bad_conv_attributes_are_refused_at_the_conv(tmp_path, conv, needle):
    line = refused(tmp_path, tiny(tmp_path / "m", conv=conv), "node conv (Conv)", needle)
    assert "Gemm" not in line


def test_a_conv_weight_that_disagrees_with_its_inputs_channels_is_refused_at_the_conv(tmp_path):
    refused(tmp_path, tiny(tmp_path / "m", weight_shape=(4, 2, 3, 3)), "node conv (Conv)", "reads 2 channels",
            "its input has 3")


def test_a_value_written_twice_is_refused(tmp_path):
    def twice(model):
        model.graph.initializer.append(_tensor(model, "conv.bias"))
    refused(tmp_path, tiny(tmp_path / "m", twice), "initializer 'conv.bias' is given twice")

    def two_writers(model):
        model.graph.node.insert(2, helper.make_node("Relu", ["c"], ["r"], name="relu2"))
    refused(tmp_path, tiny(tmp_path / "m", two_writers), "node relu2 (Relu)", "writes 'r', which another node")


def test_control_characters_in_a_node_name_never_reach_the_terminal(tmp_path):
    model = tiny(tmp_path / "m", conv={"strides": [0, 0]}, conv_name="\x1b[31mevil")
    line = refused(tmp_path, model, "(Conv)", "strides [0, 0]")
    assert "\x1b" not in line and "\\x1b[31mevil" in line
