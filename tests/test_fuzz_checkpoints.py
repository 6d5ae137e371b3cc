"""Randomly mutated checkpoints (issue #30): the fuzz corpus of tests/test_properties.py and
tests/test_fuzz_onnx.py extended to the files of weights archc reads, whose hand-made hostile files
are in tests/test_hardening_checkpoints.py.

The seeds are real files, made once: ``archc build specs/googlenet-small.yaml -o small.pt`` (and its
weights and spec as a .safetensors file), and a one-epoch ``archc train`` of tests/data/digits-cnn.yaml
on a few digits (``best.pt`` and ``last.pt``, with the class names, the preprocessing, the epoch and,
in last.pt, the optimizer's state; ``best.safetensors``, its metadata JSON). Each seeded case changes

- a .safetensors file's header length, its JSON header (dtypes, shapes, data offsets, duplicate
  keys, another type), its ``__metadata__`` values (the spec, the class names, the preprocessing,
  the epoch: other types, lengths, depths, another spec), its tensor data (cut short, extended, NaN
  and inf) or its tensors (renamed, removed, added, reshaped, of another dtype);
- a .pt file's zip records (bytes flipped or cut short, reordered, one more, the directory cut
  short), its pickle (an int or a string swapped, an opcode dropped, a storage's size changed) or
  the dict it holds (a field replaced by a value of another type or size, a key removed, the
  state_dict's keys renamed, its tensors reshaped, of another dtype: int, bool, float16, complex, or
  of another layout: sparse, quantized, on the meta device);
- or either file's bytes (bits flipped, cut short, bytes inserted).

Each case goes through ``archc build SPEC --weights FILE`` (SPEC: the seed's spec), ``archc predict
FILE IMAGE`` and ``archc draw FILE --format dot -o out.dot`` in this process: every command exits 0
or 1 (never 3, never a traceback, no warning), printing no raw control character (nor a lone
surrogate, which a terminal cannot print); a refusal names the file and leaves nothing behind; the
checkpoint is unchanged.

Each defect the fuzzer found is kept at the end as a named test: a checkpoint's spec refused at
'<string>:LINE:COL' (naming no file), in thousands of lines, or in lines of 300 KB; 20,000 unknown keys
refused in minutes (spec/diagnose.py); a tensor's key or torch's message printed with a raw tab, newline
or 100,000 characters; complex, integer or boolean values loaded as weights (complex with torch's
warning); a sparse tensor or one on the meta device, or the layers' versions torch.save keeps with a
state_dict changed, an internal error (exit 3); class names printed by predict with an ANSI escape.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import pickletools
import random
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DATA, SPECS, mangle_bytes, no_hang

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from archcompiler.cli import main  # noqa: E402

# 1,200 cases in 8 chunks of 150, one in the quick tier
TOTAL, CHUNK = 1_200, 150

# ----------------------------------------------------------------------------- the seeds


@dataclass(frozen=True)
class Seed:
    name: str               # small.pt, best.safetensors, ...
    data: bytes
    spec: Path              # the spec it was made from (build SPEC --weights FILE)
    weight: int             # how often it is drawn (the network of digits-cnn is ~20x cheaper to run)

    @property
    def form(self) -> str:
        return self.name.rsplit(".", 1)[1]


def _canonical_pt(path: Path) -> bytes:
    """A .pt file as torch.save writes it to memory (its records under archive/, whatever the
    temporary name it was written under): the same bytes on every run."""
    buf = io.BytesIO()
    torch.save(torch.load(path, map_location="cpu", weights_only=True), buf)
    return buf.getvalue()


@contextlib.contextmanager
def one_thread():
    """One torch thread while the cases run: a 2-thread forward pass on a busy 2-core machine is ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict:
    """The seed checkpoints (as bytes), the image predict reads, and the folder the cases are written to."""
    from PIL import Image

    from archcompiler.modelfile import read_weights, write_safetensors
    from archcompiler.training.digits import write_digits

    folder = tmp_path_factory.mktemp("ckpt-seeds")
    with one_thread():
        code, text = archc("build", str(SPECS / "googlenet-small.yaml"), "-o", str(folder / "small.pt"), "--seed", "0",
                           "-q", seconds=120)
        assert code == 0, text
        write_safetensors(folder / "small.safetensors", read_weights(folder / "small.pt"))
        digits = folder / "digits"
        write_digits(digits, (0, 1))
        for label in ("0", "1"):         # a few images of each: one epoch in a second
            for png in sorted((digits / label).glob("*.png"))[12:]:
                png.unlink()
        code, text = archc("train", str(DATA / "digits-cnn.yaml"), "--data", str(digits), "--epochs", "1",
                           "--out", str(folder / "run"), "--workers", "0", "--device", "cpu", "--seed", "0",
                           "--val-split", "0.25", "--set", "num_classes=2", "-q", seconds=120)
        assert code == 0, text
    run = folder / "run"
    found = [Seed("small.pt", _canonical_pt(folder / "small.pt"), SPECS / "googlenet-small.yaml", 1),
             Seed("small.safetensors", (folder / "small.safetensors").read_bytes(), SPECS / "googlenet-small.yaml", 1),
             Seed("best.pt", _canonical_pt(run / "best.pt"), run / "spec.yaml", 4),
             Seed("last.pt", _canonical_pt(run / "last.pt"), run / "spec.yaml", 2),
             Seed("best.safetensors", (run / "best.safetensors").read_bytes(), run / "spec.yaml", 5)]
    Image.linear_gradient("L").resize((20, 16)).convert("RGB").save(folder / "img.png")
    work = tmp_path_factory.mktemp("ckpt-fuzz")
    return {"seeds": found, "image": folder / "img.png", "work": work, "other_spec": {
        "pt": torch.load(folder / "small.pt", weights_only=True)["spec"],
        "digits": torch.load(run / "best.pt", weights_only=True)["spec"]}}


# ----------------------------------------------------------------------------- values

CONTROL_NAMES = ["\x1b[31mred", "a\nb", "tab\there", "\x00", "é\u202e", "\x7f\x9b"]
NAMES = ["", "x", "conv1.weight", "fc.weight", "fc.bias", "conv1.bn.running_mean", "a" * 300, "a" * 100_000,
         "../../etc/passwd", "layers.0.weight", *CONTROL_NAMES]
SCALARS = [None, True, False, 0, 1, -1, 2, 3, 16, 2**31, 2**63, -(2**63), 2**100, 0.5, -0.0, 1e308, float("nan"),
           float("inf"), float("-inf"), "", "x", "digits_cnn", "googlenet_small", "bilinear", "\x1b[2J", "\ud800",
           "a" * 300, "a" * 100_000]


def deep(n: int, inner=None):
    value = inner if inner is not None else []
    for _ in range(n):
        value = [value]
    return value


def weird_value(r: random.Random, depth: int = 0):
    """A value of any type or size JSON (and pickle) can hold."""
    roll = r.random()
    if roll < 0.45 or depth > 2:
        return r.choice(SCALARS)
    if roll < 0.6:
        return [weird_value(r, depth + 1) for _ in range(r.choice([0, 1, 2, 3, 5]))]
    if roll < 0.7:
        return r.choice([[0.5] * 1000, ["a"] * 200_000, list(range(3)), [[0.5]], [0.5, "x", None]])
    if roll < 0.8:
        return {r.choice(["name", "size", "x", "", "layers", "mean"]): weird_value(r, depth + 1)
                for _ in range(r.choice([0, 1, 2]))}
    if roll < 0.9:
        return deep(r.choice([10, 63, 64, 65, 100, 500]), r.choice([None, [], {}]))
    return {str(i): i for i in range(r.choice([10, 1000, 20_000]))}


def mutate_tree(doc, r: random.Random):
    """A copy of plain data (a spec, the preprocessing) with one to three values replaced, added or removed."""
    doc = copy.deepcopy(doc)

    def paths(node, prefix=()):
        yield prefix
        if isinstance(node, dict):
            for k, v in node.items():
                yield from paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from paths(v, (*prefix, i))

    candidates = [p for p in paths(doc) if p]
    if not candidates:
        return weird_value(r)
    for _ in range(r.randint(1, 3)):
        path = r.choice(candidates)
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            roll = r.random()
            if roll < 0.6:
                node[path[-1]] = weird_value(r)
            elif roll < 0.8 and isinstance(node, dict):
                node[r.choice(["zzz", "op", "name", "extends", "edits", "evil", "layers", "input", "size"])] = \
                    weird_value(r)
            else:
                del node[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass
    return doc


# ----------------------------------------------------------------------------- .safetensors mutations

def st_parse(data: bytes) -> tuple[list[tuple[str, object]], bytes]:
    """A .safetensors file's header (as a list of pairs: duplicates stay possible) and its tensor data."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n], object_pairs_hook=list)
    return header, data[8 + n:]


def st_join(header, body: bytes, raw: bytes | None = None) -> bytes:
    """The file of a header (a list of pairs, or any JSON value) and its data; ``raw``: the header's bytes as given."""
    def dump(value) -> str:
        if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value) and value:
            return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value) + "}"
        if isinstance(value, list):
            return "[" + ",".join(dump(v) for v in value) + "]"
        return json.dumps(value)
    text = raw if raw is not None else dump(header).encode("utf-8", "surrogatepass")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _pairs(value) -> list:
    """json.loads(..., object_pairs_hook=list) gives lists of lists: pairs as tuples again."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return [(k, _pairs(v)) for k, v in value]
    return value


def _tensor_entries(header) -> list[int]:
    return [i for i, (k, v) in enumerate(header) if k != "__metadata__" and isinstance(v, list)]


def st_length(data: bytes, r: random.Random) -> tuple[bytes, str]:
    n = struct.unpack("<Q", data[:8])[0]
    value = r.choice([0, 1, 2, n - 1, n + 1, n + 8, len(data) - 8, len(data), 2**31, 2**32 + n, 2**63, 2**64 - 1,
                      100_000_000 + n])
    return struct.pack("<Q", value) + data[8:], f"header length {n} -> {value}"


def st_header_field(data: bytes, r: random.Random) -> tuple[bytes, str]:
    header, body = st_parse(data)
    header = [(k, _pairs(v)) for k, v in header]
    i = r.choice(_tensor_entries(header))
    name, entry = header[i]
    fields = dict(entry)
    what = r.choice(["dtype", "shape", "shape", "offsets", "offsets", "drop", "extra"])
    if what == "dtype":
        fields["dtype"] = r.choice(["F64", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "C64", "F8_E4M3", "U64",
                                    "F4", "X", "", "f32", 32, None])
    elif what == "shape":
        shape = list(fields["shape"])
        how = r.choice(["set", "add", "drop", "clear", "type"])
        if how == "set" and shape:
            shape[r.randrange(len(shape))] = r.choice([0, -1, 1, 2**31, 2**40, 2**63, 2**64, 1.5, "2"])
        elif how == "add":
            shape.insert(r.randrange(len(shape) + 1), r.choice([0, 1, 2]))
        elif how == "drop" and shape:
            del shape[r.randrange(len(shape))]
        elif how == "type":
            shape = r.choice([None, 3, "3", {}])
        else:
            shape = []
        fields["shape"] = shape
    elif what == "offsets":
        a, b = fields["data_offsets"]
        fields["data_offsets"] = r.choice([[b, a], [a, b + 4], [a - 4, b], [0, b - a], [a, a], [a, len(body) + 4],
                                           [-4, b], [a, 2**64], [a], [a, b, b], [str(a), b], [a + 0.5, b], None,
                                           [len(body), len(body) + b - a]])
    elif what == "drop":
        del fields[r.choice(list(fields))]
    else:
        fields[r.choice(["extra", "dtype", "__metadata__"])] = r.choice([1, "F32", [], None])
    header[i] = (name, list(fields.items()))
    return st_join(header, body), f"tensor {name!r} header {what}: {fields}"


def st_header_whole(data: bytes, r: random.Random) -> tuple[bytes, str]:
    header, body = st_parse(data)
    header = [(k, _pairs(v)) for k, v in header]
    what = r.choice(["duplicate", "duplicate metadata", "not a dict", "not json", "not utf-8", "empty", "drop metadata",
                     "metadata type", "deep"])
    if what == "duplicate":
        i = r.choice(_tensor_entries(header))
        header.insert(r.randrange(len(header) + 1), header[r.choice(_tensor_entries(header))][:1] + header[i][1:])
        return st_join(header, body), "a tensor named twice"
    if what == "duplicate metadata":
        header.append(("__metadata__", [("format", "archc-checkpoint"), ("spec", "{}")]))
        return st_join(header, body), "__metadata__ twice"
    if what == "not a dict":
        return st_join(r.choice([[1, 2], "x", 3, None, True]), body), what
    if what == "not json":
        return st_join(None, body, raw=r.choice([b"{", b"{'a': 1}", b"{\"a\": NaN}", b"\x00" * 16, b"{}}"])), what
    if what == "not utf-8":
        raw = st_join(header, body)[8:8 + struct.unpack("<Q", data[:8])[0]]
        at = r.randrange(len(raw))
        return st_join(None, body, raw=raw[:at] + b"\xff\xfe" + raw[at + 2:]), what
    if what == "empty":
        return st_join([("__metadata__", [("format", "archc-checkpoint")])], body), what
    if what == "drop metadata":
        return st_join([(k, v) for k, v in header if k != "__metadata__"], body), what
    if what == "metadata type":
        header = [(k, r.choice([[1], "x", 2, None, [("spec", 3)], [("spec", None)], [("format", ["x"])]]))
                  if k == "__metadata__" else (k, v) for k, v in header]
        return st_join(header, body), what
    return st_join(None, body, raw=b"{\"a\":" + b"[" * 100_000 + b"]" * 100_000 + b"}"), "a header nested 100,000 deep"


def _load_st(data: bytes) -> tuple[dict, dict]:
    from safetensors.torch import load

    tensors = load(data)
    n = struct.unpack("<Q", data[:8])[0]
    meta = dict(json.loads(data[8:8 + n]).get("__metadata__") or {})
    return tensors, meta


def _save_st(tensors: dict, meta: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)


def st_metadata(data: bytes, r: random.Random, other_spec: dict) -> tuple[bytes, str]:
    tensors, meta = _load_st(data)
    key = r.choice(["spec", "spec", "spec", "classes", "classes", "preprocess", "preprocess", "epoch", "heads",
                    "spec_file", "format", "archc", "unknown"])
    old = json.loads(meta[key]) if key in meta and key not in ("format", "archc") else None
    roll = r.random()
    if key == "format":
        value = r.choice(["", "archc-checkpoint ", "ARCHC-CHECKPOINT", "x" * 100_000])
    elif key == "unknown":
        key = r.choice(["evil", "optimizer", "state_dict", "__metadata__", "\x1b[2J"])
        value = json.dumps(weird_value(r))
    elif roll < 0.15:                    # not JSON: another spec's YAML text, a truncated value, a lone word
        value = r.choice([(SPECS / "googlenet-small.yaml").read_text(), (meta.get(key) or "{}")[:-1], "digits_cnn",
                          "{'a': 1}", "NaN", "[" * 10_000, "x" * 5_000_000, '"\\ud800"'])
    elif roll < 0.3 and key == "spec":
        value = json.dumps(other_spec)
    elif roll < 0.65 and isinstance(old, (dict, list)):
        value = json.dumps(mutate_tree(old, r))
    else:
        value = json.dumps(weird_value(r))
    if key == "spec" and r.random() < 0.1:
        value = "[" * 200_000 + "]" * 200_000
    meta[key] = value
    shown = value if len(value) < 80 else f"{value[:60]}... ({len(value):,} chars)"
    return _save_st(tensors, meta), f"metadata {key!r} -> {shown!r}"


def st_body(data: bytes, r: random.Random) -> tuple[bytes, str]:
    what = r.choice(["truncate", "extend", "nan"])
    n = struct.unpack("<Q", data[:8])[0]
    if what == "truncate":
        cut = r.randrange(8 + n, len(data))
        return data[:cut], f"tensor data cut to {cut - 8 - n} bytes"
    if what == "extend":
        return data + bytes(r.choice([1, 4, 7, 4096])), "tensor data extended"
    header, _ = st_parse(data)
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        name, entry = r.choice([header[i] for i in _tensor_entries(header)])
        fields = dict(entry)
        if fields["dtype"] != "F32" or fields["data_offsets"][1] == fields["data_offsets"][0]:
            continue
        a, end = fields["data_offsets"]
        at = 8 + n + a + 4 * r.randrange((end - a) // 4)
        b[at:at + 4] = struct.pack("<f", r.choice([math.nan, math.inf, -math.inf, 3e38, 1e-45]))
    return bytes(b), "tensor values NaN/inf"


def tensors_mutation(tensors: dict, r: random.Random, layouts: bool = True) -> str:
    """The state_dict's tensors renamed, removed, added, reshaped, of another dtype or (``layouts``: in a
    .pt file) of another layout or device (in place)."""
    keys = list(tensors)
    key = r.choice(keys)
    what = r.choice(["rename", "remove", "add", "reshape", "reshape", "dtype", "dtype", "values",
                     *(["layout"] if layouts else [])])
    if what == "rename":
        tensors[r.choice(NAMES)] = tensors.pop(key)
    elif what == "remove":
        del tensors[key]
    elif what == "add":
        tensors[r.choice(NAMES + ["extra.weight"])] = r.choice(
            [torch.zeros(3), torch.zeros(0), torch.zeros(2, 0, 3), torch.tensor(1.0), torch.zeros(1, 1, 1, 1, 1, 1)])
    elif what == "reshape":
        t = tensors[key]
        if t.dim() == 0:
            t = t.reshape(1)
        tensors[key] = r.choice([t.reshape(-1), t.reshape(1, *t.shape), t[:0], torch.zeros(0), t.reshape(*t.shape, 1),
                                 torch.zeros(*t.shape[:-1], t.shape[-1] + 1), t.t() if t.dim() == 2 else t.flip(0),
                                 t.reshape(()) if t.numel() == 1 else t.reshape(-1)[:1].reshape(())])
    elif what == "dtype":
        dtype = r.choice([torch.int64, torch.int32, torch.uint8, torch.bool, torch.float16, torch.bfloat16,
                          torch.float64, torch.complex64])
        tensors[key] = tensors[key].to(dtype)
    elif what == "layout":               # not a plain tensor of the CPU: sparse, on the meta device, expanded
        t = tensors[key]
        tensors[key] = r.choice([t.to_sparse(), torch.empty(t.shape, device="meta"),
                                 t.reshape(-1)[:1].reshape((1,) * t.dim()).expand(t.shape) if t.numel() else t,
                                 t.to_sparse_csr() if t.dim() == 2 else t.to_sparse(),
                                 torch.quantize_per_tensor(t.float(), 0.1, 0, torch.quint8)])
    else:
        t = tensors[key].clone()
        if t.is_floating_point() and t.numel():
            t.view(-1)[r.randrange(t.numel())] = r.choice([math.nan, math.inf, -math.inf, 1e38])
        tensors[key] = t
    return f"tensor {key!r}: {what}"


def st_tensors(data: bytes, r: random.Random) -> tuple[bytes, str]:
    tensors, meta = _load_st(data)
    done = tensors_mutation(tensors, r, layouts=False)
    return _save_st(tensors, meta), done


def st_case(data: bytes, r: random.Random, other_spec: dict) -> tuple[bytes, str]:
    mutation = r.choice([st_length, st_header_field, st_header_field, st_header_whole, st_metadata, st_metadata,
                         st_metadata, st_metadata, st_body, st_tensors, st_tensors])
    if mutation is st_metadata:
        return st_metadata(data, r, other_spec)
    return mutation(data, r)


# ----------------------------------------------------------------------------- .pt mutations

def zip_records(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def zip_join(records: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # zipfile's "Duplicate name"
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for name, body in records:
                zf.writestr(name, body)
    return buf.getvalue()


def _ops(pkl: bytes) -> list[tuple[str, object, int, int]]:
    """The pickle's opcodes: (name, argument, start, end)."""
    ops = list(pickletools.genops(pkl))
    return [(op.name, arg, pos, ops[i + 1][2] if i + 1 < len(ops) else len(pkl)) for i, (op, arg, pos) in enumerate(ops)]


def _int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    body = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body


def _str_op(value: str) -> bytes:
    body = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(body)) + body


INTS = [0, 1, -1, 2, 3, 7, 64, 255, 256, 2**31 - 1, 2**31, 2**40, 2**62, 2**63, -(2**63), 2**100]
STRINGS = ["", "x", "state_dict", "spec", "classes", "preprocess", "heads", "epoch", "cuda", "meta", "1", "99",
           "storage", "a" * 1000, *CONTROL_NAMES]


def pt_pickle(data: bytes, r: random.Random) -> tuple[bytes, str]:
    records = zip_records(data)
    k = next(i for i, (name, _) in enumerate(records) if name.endswith("data.pkl"))
    pkl = records[k][1]
    ops = _ops(pkl)
    what = r.choice(["int", "int", "str", "str", "swap", "drop op", "storage size"])
    ints = [o for o in ops if o[0] in ("BININT1", "BININT2", "BININT", "LONG1")]
    strs = [o for o in ops if o[0] in ("BINUNICODE", "SHORT_BINUNICODE")]
    if what == "storage size":          # ('storage', type, key, location, numel): the int after the location
        values = [o for o in ops if o[0] not in ("BINPUT", "LONG_BINPUT", "MEMOIZE")]     # (memo writes between)
        after = [values[i + 1] for i, o in enumerate(values[:-1]) if o[0].endswith("UNICODE") and o[1] == "cpu"
                 and values[i + 1][0] in ("BININT1", "BININT2", "BININT", "LONG1")]
        target = r.choice(after or ints)
        new = _int_op(r.choice([0, 1, target[1] - 1, target[1] + 1, target[1] * 2, 2**31, 2**40, 2**62, -1]))
    elif what == "int":
        target = r.choice(ints)
        new = _int_op(r.choice(INTS))
    elif what == "str":
        target = r.choice(strs)
        new = _str_op(r.choice(STRINGS))
    elif what == "swap":                 # an int where a string was, or a string where an int was
        target = r.choice(ints + strs)
        new = _str_op(r.choice(STRINGS)) if target in ints else _int_op(r.choice(INTS))
    else:
        target = r.choice(ops[1:-1])
        new = b""
    name, arg, start, end = target
    records[k] = (records[k][0], pkl[:start] + new + pkl[end:])
    shown = arg if not isinstance(arg, str) or len(arg) < 60 else arg[:60] + "..."
    return zip_join(records), f"data.pkl {what}: {name} {shown!r} at {start}"


def pt_records(data: bytes, r: random.Random) -> tuple[bytes, str]:
    records = zip_records(data)
    what = r.choice(["flip", "flip", "truncate", "reorder", "extra", "drop", "directory"])
    if what == "directory":
        end = data.rfind(b"PK\x05\x06")
        start = data.find(b"PK\x01\x02")
        cut = r.randrange(start, len(data)) if start >= 0 else r.randrange(len(data))
        return data[:cut] + (data[end:] if r.random() < 0.3 and end > cut else b""), f"zip directory cut at {cut}"
    k = r.randrange(len(records))
    name, body = records[k]
    if what == "flip" and body:
        b = bytearray(body)
        for _ in range(r.randint(1, 8)):
            b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        records[k] = (name, bytes(b))
    elif what == "truncate":
        records[k] = (name, body[: r.randrange(len(body) + 1)])
    elif what == "reorder":
        r.shuffle(records)
    elif what == "extra":
        prefix = records[0][0].split("/")[0]
        records.insert(r.randrange(len(records) + 1), (r.choice([f"{prefix}/data/999", f"{prefix}/data.pkl", name,
                                                                  f"{prefix}/extra", "other/data.pkl", f"{prefix}/"]),
                                                        r.choice([b"", b"x" * 100, body])))
    else:
        del records[k]
    return zip_join(records), f"zip record {name!r} {what}"


PT_FIELDS = ["spec", "spec", "heads", "classes", "classes", "preprocess", "preprocess", "state_dict", "epoch",
             "spec_file", "archc", "optimizer", "history"]


def pt_fields(payload: dict, r: random.Random, other_spec: dict) -> str:
    """The dict a .pt file holds, changed in place: a field replaced, removed or added, or its tensors changed."""
    roll = r.random()
    if roll < 0.35 and isinstance(payload.get("state_dict"), dict) and payload["state_dict"]:
        state = dict(payload["state_dict"])
        if r.random() < 0.2:        # keys of another type
            key = r.choice(list(state))
            state[r.choice([0, None, ("a",), 1.5, b"x"])] = state.pop(key)
            payload["state_dict"] = state
            return f"state_dict key {key!r} of another type"
        done = tensors_mutation(state, r)
        payload["state_dict"] = state
        return done
    key = r.choice(PT_FIELDS)
    if roll < 0.45:
        payload.pop(key, None)
        return f"{key} removed"
    old = payload.get(key)
    if key == "spec" and r.random() < 0.3:
        payload["spec"] = copy.deepcopy(other_spec)
    elif isinstance(old, (dict, list)) and key != "state_dict" and r.random() < 0.6:
        payload[key] = mutate_tree(old, r)
    else:
        payload[key] = r.choice([weird_value(r), torch.zeros(2), (1, 2), b"bytes", {"a": torch.zeros(1)},
                                 {1: torch.zeros(1)}, complex(1, 2), weird_value(r)])
    return f"{key} -> {type(payload[key]).__name__}"


def pt_case(seed: Seed, r: random.Random, other_spec: dict, payloads: dict) -> tuple[bytes, str]:
    mutation = r.choice(["pickle", "pickle", "records", "records", "fields", "fields", "fields", "fields"])
    if mutation == "pickle":
        return pt_pickle(seed.data, r)
    if mutation == "records":
        return pt_records(seed.data, r)
    if seed.name not in payloads:
        payloads[seed.name] = torch.load(io.BytesIO(seed.data), weights_only=True)
    payload = dict(payloads[seed.name])
    done = [pt_fields(payload, r, other_spec) for _ in range(r.choice([1, 1, 1, 2]))]
    buf = io.BytesIO()
    try:
        torch.save(payload, buf)
    except (RecursionError, TypeError, ValueError, RuntimeError) as exc:     # pickle refused the value itself
        return seed.data, f"{'; '.join(done)}: not saved ({type(exc).__name__})"
    return buf.getvalue(), "; ".join(done)


# ----------------------------------------------------------------------------- byte-level mutations

def case(number: int, seeds: dict, payloads: dict) -> tuple[Seed, bytes, str]:
    """The mutated checkpoint of case ``number``: its seed, its bytes and what was done to it."""
    with warnings.catch_warnings():     # torch's notes on what it is asked to make (quantized tensors)
        warnings.simplefilter("ignore")
        return _case(number, seeds, payloads)


def _case(number: int, seeds: dict, payloads: dict) -> tuple[Seed, bytes, str]:
    r = random.Random(number)
    seed = r.choices(seeds["seeds"], weights=[s.weight for s in seeds["seeds"]])[0]
    other = seeds["other_spec"]["digits" if seed.name.startswith("small") else "pt"]
    if r.random() < 0.15:
        data, done = mangle_bytes(seed.data, r)
    elif seed.form == "safetensors":
        data, done = st_case(seed.data, r, other)
    else:
        data, done = pt_case(seed, r, other, payloads)
    if r.random() < 0.05:             # and its bytes too
        data, more = mangle_bytes(data, r)
        done = f"{done}; {more}"
    return seed, data, f"case {number} ({seed.name}): {done}"


# ----------------------------------------------------------------------------- the checks

def _control(text: str) -> bool:
    return any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in text)


def archc(*args: str, seconds: float = 120) -> tuple[int, str]:
    """The CLI in this process, with everything it prints (a warning included)."""
    buf = io.StringIO()
    with no_hang(seconds), warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("always")
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    said = "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    return code, buf.getvalue() + said


def check(seed: Seed, data: bytes, what: str, image: Path, folder: Path) -> list[int]:
    """Every command on the checkpoint ``data`` (written to folder/case.SUFFIX): exit 0 or 1, no internal
    error, traceback or warning, no raw control character or lone surrogate; a refusal names the file
    and leaves nothing behind; the file unchanged. Returns the exit codes."""
    path = folder / f"case.{seed.form}"
    for old in folder.iterdir():
        old.unlink()
    path.write_bytes(data)
    codes = []
    for command in (["build", str(seed.spec), "--weights", str(path), "-q"],
                    ["predict", str(path), str(image)],
                    ["draw", str(path), "--format", "dot", "-o", str(folder / "out.dot")]):
        code, text = archc(*command)
        said = f"{what}\n$ archc {' '.join(command)}\nexit {code}\n{text[-3000:]}"
        assert code in (0, 1), said
        assert "Traceback" not in text and "internal error" not in text, said
        assert "Warning" not in text, said
        assert not _control(text), f"a raw control character: {said!r}"
        text.encode("utf-8")            # a lone surrogate cannot be printed
        assert path.read_bytes() == data, f"the checkpoint changed: {said}"
        left = sorted(p.name for p in folder.iterdir() if p != path)
        if code == 1:
            assert left == [], f"a refusal left {left}: {said}"
            assert str(path) in text, f"the refusal does not name the file: {said}"
            assert len(text) < 5000, said
        elif command[0] == "draw":
            assert left == ["out.dot"], said
            (folder / "out.dot").unlink()
        else:
            assert left == [], said
        codes.append(code)
    return codes


@pytest.fixture(scope="module")
def payloads() -> dict:
    return {}


def test_the_seeds_build_predict_and_draw(seeds):
    """The control: every seed, unmutated, passes every command (exit 0)."""
    with one_thread():
        for seed in seeds["seeds"]:
            assert check(seed, seed.data, f"seed {seed.name}", seeds["image"], seeds["work"]) == [0, 0, 0]


@pytest.mark.parametrize("chunk", [0, *(pytest.param(c, marks=pytest.mark.slow) for c in range(1, TOTAL // CHUNK))])
def test_mutated_checkpoints_never_reach_an_internal_error(chunk, seeds, payloads):
    passed = 0
    with one_thread():
        for number in range(chunk * CHUNK, (chunk + 1) * CHUNK):
            seed, data, what = case(number, seeds, payloads)
            passed += check(seed, data, what, seeds["image"], seeds["work"]) == [0, 0, 0]
    assert passed < CHUNK          # the mutations do change something


# ----------------------------------------------------------------------------- the defects found, by name

def seed_named(seeds: dict, name: str) -> Seed:
    return next(s for s in seeds["seeds"] if s.name == name)


def changed_pt(seeds: dict, name: str, change) -> tuple[Seed, Path]:
    """best.pt (or another seed) with ``change(payload)`` applied, written to the work folder as NAME.pt."""
    seed = seed_named(seeds, "best.pt")
    payload = torch.load(io.BytesIO(seed.data), weights_only=True)
    path = seeds["work"].parent / f"{name}.pt"
    with warnings.catch_warnings():     # torch's notes on what it is asked to make (quantized tensors)
        warnings.simplefilter("ignore")
        change(payload)
        torch.save(payload, path)
    return seed, path


def changed_safetensors(seeds: dict, name: str, change) -> tuple[Seed, Path]:
    """best.safetensors with ``change(tensors, metadata)`` applied, written as NAME.safetensors."""
    seed = seed_named(seeds, "best.safetensors")
    tensors, meta = _load_st(seed.data)
    change(tensors, meta)
    path = seeds["work"].parent / f"{name}.safetensors"
    path.write_bytes(_save_st(tensors, meta))
    return seed, path


def refused(seeds: dict, seed: Seed, path: Path, *words: str, commands=("build", "predict", "draw")) -> list[str]:
    """Each command refuses ``path``: exit 1, the first line naming it (those after it list the tensors
    that differ, at the spec's layers), no control character, ``words`` said; nothing written. Returns
    each command's output."""
    said = []
    for command in commands:
        args = {"build": ["build", str(seed.spec), "--weights", str(path), "-q"],
                "predict": ["predict", str(path), str(seeds["image"])],
                "draw": ["draw", str(path), "--format", "dot", "-o", str(path.parent / "refused.dot")]}[command]
        before = path.read_bytes()
        (path.parent / "refused.dot").unlink(missing_ok=True)
        with one_thread():
            code, text = archc(*args)
        assert code == 1, (args, text)
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("building ")]
        assert lines and str(path) in lines[0], text
        assert not _control(text) and "Traceback" not in text and "Warning" not in text, repr(text)
        assert len(text) < 3000, text[:3000]
        for word in words:
            assert word in text, (word, text)
        assert path.read_bytes() == before and not (path.parent / "refused.dot").exists()
        said.append(text)
    return said


def test_a_refusal_of_an_embedded_spec_names_the_checkpoint(seeds):
    """Found by case 1 (a layer's key changed in data.pkl): a spec inside a checkpoint that does not load
    was refused at '<string>:85:9: ...', naming no file. Its values are now located in 'FILE (embedded
    spec)', the refusals that come later too (the preprocessing of the spec's data: section)."""
    def unknown_key(payload):
        payload["spec"]["layers"][0]["evil"] = 1
    seed, path = changed_pt(seeds, "unknown-key", unknown_key)
    for text in refused(seeds, seed, path, "(embedded spec):", "unknown key 'evil'", commands=("predict", "draw")):
        assert "<string>" not in text

    def no_preprocess(payload):
        payload.pop("preprocess")
        payload["spec"]["data"]["crop"] = 32
    seed, path = changed_pt(seeds, "crop", no_preprocess)
    (text,) = refused(seeds, seed, path, "(embedded spec)", "data.crop", commands=("predict",))
    assert "<string>" not in text

    def st_unknown_key(tensors, meta):
        spec = json.loads(meta["spec"])
        spec["layers"][2]["kernal"] = 2
        meta["spec"] = json.dumps(spec)
    seed, path = changed_safetensors(seeds, "unknown-key", st_unknown_key)
    refused(seeds, seed, path, "(embedded spec):", "did you mean 'kernel'", commands=("predict", "draw"))


def test_an_embedded_spec_of_a_thousand_problems_says_the_first_few(seeds):
    """Found by case 600: a spec in the metadata holding 1,000 unknown keys printed 1,000 lines."""
    def thousand(tensors, meta):
        meta["spec"] = json.dumps({**json.loads(meta["spec"]), **{str(i): i for i in range(1000)}})
    seed, path = changed_safetensors(seeds, "thousand", thousand)
    for text in refused(seeds, seed, path, "unknown key '0'", "... and 995 more problems in the embedded spec",
                        commands=("predict", "draw")):
        assert len(text.splitlines()) == 6, text


@pytest.mark.parametrize("key", ["tab\there", "a\nb", "\x1b[31mred", "a" * 100_000],
                         ids=["tab", "newline", "ansi-escape", "100000-characters"])
def test_a_tensor_name_from_the_file_is_printed_escaped_and_cut(seeds, key):
    """Found by cases 535 and 1039: an unexpected key of the state_dict was printed as it was (a raw tab,
    a newline, an ANSI escape; 100,000 characters)."""
    def renamed(payload):
        payload["state_dict"][key] = payload["state_dict"].pop("fc.bias")
    seed, path = changed_pt(seeds, "renamed", renamed)
    (text,) = refused(seeds, seed, path, "unexpected key", commands=("build",))
    if len(key) > 1000:
        assert "... (100,000 characters)" in text
    else:
        assert repr(key)[1:-1] in text


def test_a_record_name_with_a_tab_in_torchs_message_is_escaped(seeds):
    """Found by case 49: data.pkl naming a storage record 'data/tab<TAB>here'; torch's message, which
    names the record, was printed with the raw tab."""
    seed = seed_named(seeds, "best.pt")
    records = zip_records(seed.data)
    k = next(i for i, (name, _) in enumerate(records) if name.endswith("data.pkl"))
    ops = _ops(records[k][1])
    at = next(i for i, o in enumerate(ops) if o[0] == "BINUNICODE" and o[1] == "storage")
    key = next(o for o in ops[at:] if o[0] == "BINUNICODE" and str(o[1]).isdigit())     # the record's key
    pkl = records[k][1]
    records[k] = (records[k][0], pkl[:key[2]] + _str_op("tab\there") + pkl[key[3]:])
    path = seeds["work"].parent / "record.pt"
    path.write_bytes(zip_join(records))
    refused(seeds, seed, path, "cannot read weights", "data/tab\\there")


def test_a_key_of_an_embedded_spec_with_a_tab_is_escaped(seeds):
    """Found by case 300: a layer's key 'tab<TAB>here' in a checkpoint's spec was printed with the raw tab
    (errors.printable escaped every control character but the tab and the newline)."""
    from archcompiler.errors import printable

    def tab(payload):
        payload["spec"]["layers"][1]["tab\there"] = 1
    seed, path = changed_pt(seeds, "tab", tab)
    refused(seeds, seed, path, "tab\\x09here", commands=("predict",))
    assert printable("a\tb\nc\x1b") == "a\\x09b\\x0ac\\x1b"


@pytest.mark.parametrize("dtype", ["complex64", "int64", "bool"])
def test_values_of_another_kind_are_refused_not_cast(seeds, dtype):
    """Found by case 110: a tensor of complex numbers loaded into a float parameter, torch warning
    'Casting complex values to real discards the imaginary part' and archc saying nothing; integers and
    booleans were taken as weights too. A float16 or float64 tensor is still cast, as before."""
    def typed(tensors, meta):
        tensors["conv2.bn.bias"] = tensors["conv2.bn.bias"].to(getattr(torch, dtype))
    seed, path = changed_safetensors(seeds, f"typed-{dtype}", typed)
    words = ["conv2.bn.bias", "complex numbers"] if dtype == "complex64" else \
        ["values of another kind for conv2.bn.bias", f"checkpoint {'boolean' if dtype == 'bool' else 'integer'}"]
    refused(seeds, seed, path, *words, commands=("build", "predict"))       # draw loads no weights

    def half(tensors, meta):
        tensors["conv2.bn.bias"] = tensors["conv2.bn.bias"].half()
    seed, path = changed_safetensors(seeds, "half", half)
    assert check(seed, path.read_bytes(), "float16", seeds["image"], seeds["work"]) == [0, 0, 0]


@pytest.mark.parametrize("layout", ["sparse", "sparse_csr", "meta", "quantized"])
def test_a_tensor_that_is_not_dense_data_is_refused_when_read(seeds, layout):
    """Found by cases 184 and 508: a sparse tensor, or one on the meta device (no data), in the state_dict
    was an internal error (exit 3) when loaded ('copy_() between dense and sparse Tensors', 'Cannot copy
    out of meta tensor'); reading a sparse CSR tensor printed torch's 'in beta' warning."""
    def odd(payload):
        t = payload["state_dict"]["fc.weight"]
        payload["state_dict"]["fc.weight"] = {
            "sparse": t.to_sparse(), "sparse_csr": t.to_sparse_csr(), "meta": torch.empty(t.shape, device="meta"),
            "quantized": torch.quantize_per_tensor(t, 0.1, 0, torch.quint8)}[layout]
    seed, path = changed_pt(seeds, layout, odd)
    refused(seeds, seed, path, "fc.weight in", {"sparse": "a sparse tensor", "sparse_csr": "a sparse tensor",
                                                 "meta": "on the meta device", "quantized": "a quantized tensor"}[layout])


def test_twenty_thousand_unknown_keys_are_refused_in_linear_time(seeds, tmp_path):
    """Found by case 1736 (a spec in a .pt file given 20,000 keys): predict and draw ran past the 30 s guard.
    Translating pydantic's errors (spec/diagnose.py) scanned every error for each error: a spec file of
    20,000 unknown keys (200 KB) took 57 s to refuse; now about 2 s."""
    spec = tmp_path / "many.yaml"
    spec.write_text("name: x\ninput: [3, 8, 8]\nlayers: [{name: fc, op: linear, out: 2}]\n"
                    + "".join(f"k{i}: {i}\n" for i in range(20_000)))
    code, text = archc("validate", str(spec), seconds=300)     # a hang guard; the time: benchmarks/RESULTS.md
    assert code == 1 and f"{spec}:4:1: k0: unknown key 'k0'" in text, text[:2000]

    def many(payload):
        payload["spec"].update({f"k{i}": i for i in range(20_000)})
    seed, path = changed_pt(seeds, "many", many)
    refused(seeds, seed, path, "unknown key 'k0'", "... and 19,995 more problems in the embedded spec",
            commands=("predict", "draw"))         # each within archc()'s 30 s guard


@pytest.mark.parametrize("field", ["name", "op"])
def test_a_huge_value_in_an_embedded_spec_is_said_in_a_short_line(seeds, field):
    """Found by cases 2567 and 3115: a layer's name (or op) given as a mapping of 20,000 keys was printed
    whole in the message ('layers.{...}.name: ...', 'unknown op {...}'): 12 KB and 300 KB lines."""
    def huge(tensors, meta):
        spec = json.loads(meta["spec"])
        spec["layers"][2][field] = {str(i): i for i in range(20_000)}
        meta["spec"] = json.dumps(spec)
    seed, path = changed_safetensors(seeds, f"huge-{field}", huge)
    for text in refused(seeds, seed, path, "(embedded spec)", "characters)", commands=("predict", "draw")):
        assert len(text) < 2000, text


@pytest.mark.parametrize("name", ["\x1b[2J", "a\nb", "\ud800"], ids=["ansi-escape", "newline", "lone-surrogate"])
def test_a_class_name_that_cannot_be_printed_is_refused(seeds, name, tmp_path):
    """Found by case 5198: class names from last.pt were printed by predict as they were: an ANSI escape
    cleared the terminal (a lone surrogate cannot be printed at all). A training folder of such a name is
    refused too, so that archc train never writes a checkpoint archc then refuses."""
    from archcompiler.errors import RunError
    from archcompiler.training.data import scan

    def classes(payload):
        payload["classes"] = ["0", name]
    seed, path = changed_pt(seeds, "classes", classes)
    refused(seeds, seed, path, "classes in", "none a control character", commands=("predict",))
    if name != "\ud800":            # (a file name that is not UTF-8)
        (tmp_path / "ok").mkdir()
        (tmp_path / name).mkdir()
        with pytest.raises(RunError, match="class folder whose name holds a control character"):
            scan(tmp_path)


@pytest.mark.parametrize("versions", [{"conv1.bn": {"version": "2"}}, {"conv1.bn": 2}, 7],
                         ids=["string-version", "not-a-mapping", "an-int"])
def test_the_state_dicts_layer_versions_are_checked(seeds, versions):
    """Found by case 9677 (an int in data.pkl swapped for a string): the module versions torch.save keeps
    with a state_dict (its ``_metadata``) were read by load_state_dict as they were: BatchNorm's
    'version < 2' with a string was an internal error (TypeError, exit 3)."""
    def changed(payload):
        payload["state_dict"]._metadata = versions
    seed, path = changed_pt(seeds, "versions", changed)
    refused(seeds, seed, path, "the versions of the layers in", "_metadata")
