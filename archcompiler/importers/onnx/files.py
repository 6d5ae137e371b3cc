"""ONNX files as untrusted data: a model read only as a regular file of bounded size whose top-level fields are a
ModelProto's, its external data only from a plain file beside it; and the files an import writes (checked
before anything is written, each atomically)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from ...errors import BackendError, Location, error
from ...spec.limits import MAX_LAYERS
from .graph import _fail, safe_text

MAX_ONNX_BYTES = 2 * 1024 ** 3          # an ONNX file (its protobuf limit)
MAX_NODES = 4 * MAX_LAYERS
MAX_ELEMENTS = 2 ** 31                  # all initializers together
MAX_TOP_FIELDS = 4096                   # the ModelProto fields walked before the file is read whole
# the fields of ONNX's ModelProto -> their protobuf wire type (0: a number, 2: bytes or a message)
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
# the initializer types archc reads (TensorProto.DataType -> its name): numbers safetensors and torch hold
_DATA_TYPES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL",
               10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 16: "BFLOAT16"}


def _onnx() -> Any:
    """The onnx package, or a refusal that says how to install it."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference  # noqa: F401 (both used once the model is read)
    except ImportError as exc:
        raise BackendError([error(f"reading an ONNX file needs the onnx package, which cannot be imported "
                                  f"({safe_text(exc)})", "import", hint="pip install 'archcompiler[onnx]'")]) from None
    return onnx


_KINDS = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a plain file")


def _load(path: Path) -> Any:
    """The ModelProto of the file, read as data: a regular file (not a folder, a pipe or a device, which
    are never opened for reading), of at most MAX_ONNX_BYTES, whose top-level fields are a ModelProto's
    (walked with a few small reads, so that a file of zeros or garbage is refused before it is read
    whole)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _fail(path, _stat_error(path, exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, f"{safe_text(path)} is a folder, not an ONNX file", hint="give the path of the .onnx file")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, f"{safe_text(path)} is not a regular file: it is {_kind(st.st_mode)}",
                    hint="archc reads an ONNX model from a plain file")
    onnx = _onnx()
    try:        # O_NONBLOCK: a file swapped for a pipe since the stat is never waited on
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _fail(path, _stat_error(path, exc)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _fail(path, f"{safe_text(path)} is not a regular file: it is {_kind(st.st_mode)}")
        size = st.st_size
        if size == 0:
            raise _fail(path, f"{safe_text(path)} is empty, not an ONNX model")
        if size > MAX_ONNX_BYTES:
            raise _fail(path, f"{safe_text(path)} is {size} bytes; at most {MAX_ONNX_BYTES} are read")
        why = _not_a_model(f, size)
        if why:
            raise _fail(path, f"{safe_text(path)} is not a readable ONNX model: {why}",
                        hint="archc imports an ONNX ModelProto file (what torch.onnx.export writes)")
        f.seek(0)
        data = f.read(size + 1)
    if len(data) != size:
        raise _fail(path, f"{safe_text(path)} changed while it was read ({size} bytes, then {len(data)})")
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 (a malformed file: say so, without a traceback)
        raise _fail(path, f"{safe_text(path)} is not a readable ONNX model: {safe_text(exc)}") from None


def _stat_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{safe_text(path)} is a symbolic link that leads back to itself (a loop)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{safe_text(path)} does not exist"
    return f"cannot read {safe_text(path)}: {safe_text(exc.strerror or exc)}"


def _varint(data: bytes, at: int) -> tuple[int | None, int]:
    """The protobuf varint at ``at`` and the offset after it; None where the bytes are not one."""
    value = 0
    for k in range(10):
        if at + k >= len(data):
            return None, at
        value |= (data[at + k] & 0x7F) << (7 * k)
        if not data[at + k] & 0x80:
            return value, at + k + 1
    return None, at


def _not_a_model(f: Any, size: int) -> str | None:
    """Why the file's top-level protobuf fields are not a ModelProto's (None where they may be): each
    field's tag a ModelProto field of its wire type (an unknown field number, which a later ONNX may
    add, of any valid one), each length within the file, and a graph among them. At most MAX_TOP_FIELDS
    are walked, a seek and a read of 20 bytes each."""
    pos, graph = 0, False
    for _ in range(MAX_TOP_FIELDS):
        if pos == size:
            return None if graph else "it holds no graph"
        f.seek(pos)
        head = f.read(20)
        tag, at = _varint(head, 0)
        field, wire = (tag >> 3, tag & 7) if tag is not None else (0, -1)
        if field == 0 or wire not in (0, 1, 2, 5) or _MODEL_FIELDS.get(field, wire) != wire:
            return (f"the bytes at offset {pos} ({head[:8].hex(' ')}) are not a field of a protobuf ModelProto"
                    if pos else f"its first bytes ({head[:8].hex(' ')}) are not a field of a protobuf ModelProto")
        if wire == 0:
            value, at = _varint(head, at)
            if value is None:
                return f"the number at offset {pos} does not end"
            end = pos + at
        elif wire == 2:
            length, at = _varint(head, at)
            if length is None:
                return f"the length at offset {pos} does not end"
            end = pos + at + length
        else:
            end = pos + at + (8 if wire == 1 else 4)
        if end > size:
            return f"field {field} at offset {pos} runs {end - size} bytes past the end of the file (it is cut short)"
        graph = graph or field == 7
        pos = end
    return None


def _same(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same file now (a hard link, a symbolic link), or the same
    place once resolved (without failing on a symbolic link loop)."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass
    return os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b))


def check_outputs(outputs: list[tuple[str, str]], inputs: dict[Path, str]) -> None:
    """Refuse, before anything is written, outputs ((option, path)) that name an input (path -> what it
    is), one another, a folder, or a symbolic link loop."""
    def refuse(out: str, message: str, hint: str) -> BackendError:
        return BackendError([error(message, "output", Location(safe_text(out, 1000)), hint=hint)])
    for k, (option, out) in enumerate(outputs):
        for src, what in inputs.items():
            if _same(out, src):
                raise refuse(out, f"{option} {safe_text(out)} is {what} ({safe_text(src)}), an input of this command; "
                                  "archc will not write over it", f"choose another {option} name")
        for other_option, other in outputs[:k]:
            if _same(out, other):
                raise refuse(out, f"{other_option} and {option} both name {safe_text(out)}: the spec and the weights "
                                  "would be written over one another", "give --weights another file name")
        if os.path.isdir(out):
            raise refuse(out, f"{option} {safe_text(out)} is a folder", f"give a file name, e.g. {option} "
                                                                    f"{safe_text(Path(out) / 'net')}")
        try:
            os.stat(out)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refuse(out, f"{option} {safe_text(out)} is a symbolic link that leads back to itself (a loop)",
                             "remove the link or choose another name") from None


def _weights_bytes(state: dict[str, Any], target: Path) -> bytes:
    from safetensors.numpy import save

    try:
        return save(state, metadata={"archc": "imported from ONNX"})
    except Exception as exc:  # noqa: BLE001 (a number type safetensors cannot hold: said, not a traceback)
        raise BackendError([error(f"the weights cannot be written as safetensors: {safe_text(exc)}", "--weights",
                                  Location(safe_text(target, 1000)))]) from None


def _write(files: dict[str, bytes]) -> None:
    """Write the files together: a temporary file beside each is made (which checks each folder can be
    written) before any is filled, and each then replaces its file, the last given first; one refused,
    none is written (but for a replace that fails after another's)."""
    from contextlib import ExitStack

    from ...io import atomic_path

    with ExitStack() as stack:
        temporaries = [(p, stack.enter_context(atomic_path(p)), data) for p, data in files.items()]
        for p, tmp, data in temporaries:
            try:
                tmp.write_bytes(data)
            except OSError as exc:
                raise BackendError([error(f"cannot write {safe_text(p)}: {safe_text(exc.strerror or exc)}", "output",
                                          Location(safe_text(p, 1000)))]) from None


def save_weights(state: dict[str, Any], target: str | Path) -> Path:
    from ...io import write_bytes

    return write_bytes(target, _weights_bytes(state, Path(target)))
