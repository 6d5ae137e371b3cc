"""Reading YAML safely while remembering where every key and value came from.

PyYAML's composer gives nodes with marks; we build the data ourselves, so that (1) nothing but
plain data is ever constructed (no object tags, no code), (2) duplicate keys are errors instead of
silently keeping the last one, and (3) every mapping and list carries the :class:`Location` of each
of its entries.  Locations travel with the data through ``extends`` merges, edits and ``--set``
overrides, so ``archc resolve`` can say where each value came from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import Diagnostic, Location, SpecError, error
from .limits import MAX_INT_BITS, MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

_SAFE_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present: same nodes, faster


class YDict(dict):
    """A mapping that knows where it, each key and each value stand in their source."""

    def __init__(self, *args: Any, loc: Location | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.loc = loc or Location()
        self.locs: dict[str, Location] = {}
        self.key_locs: dict[str, Location] = {}

    def put(self, key: str, value: Any, loc: Location, key_loc: Location | None = None) -> None:
        self[key] = value
        self.locs[key] = loc
        self.key_locs[key] = key_loc or loc

    def where(self, key: Any, key_only: bool = False) -> Location:
        table = self.key_locs if key_only else self.locs
        return table.get(key) or self.locs.get(key) or self.loc

    def __deepcopy__(self, memo: dict) -> YDict:
        out = YDict(loc=self.loc)
        for k, v in self.items():
            out.put(k, clone(v), self.where(k), self.where(k, True))
        return out


class YList(list):
    """A list that knows where it and each item stand in their source."""

    def __init__(self, items: Any = (), loc: Location | None = None, locs: list[Location] | None = None):
        super().__init__(items)
        self.loc = loc or Location()
        self.locs: list[Location] = list(locs) if locs is not None else [self.loc] * len(self)

    def where(self, index: Any, key_only: bool = False) -> Location:
        if isinstance(index, int) and 0 <= index < len(self.locs):
            return self.locs[index]
        return self.loc

    def add(self, value: Any, loc: Location) -> None:
        self.append(value)
        self.locs.append(loc)

    def insert_at(self, index: int, value: Any, loc: Location) -> None:
        self.insert(index, value)
        self.locs.insert(index, loc)

    def remove_at(self, index: int) -> None:
        del self[index]
        del self.locs[index]

    def __deepcopy__(self, memo: dict) -> YList:
        return YList([clone(v) for v in self], self.loc, self.locs)


def clone(value: Any) -> Any:
    """A deep copy that keeps locations."""
    if isinstance(value, (YDict, YList)):
        return value.__deepcopy__({})
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def locate(data: Any, path: tuple, key: bool = False) -> Location:
    """The location of the value at ``path`` (of its key with ``key=True``), or of the closest
    enclosing value that has one."""
    node, best = data, getattr(data, "loc", Location())
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, (YDict, YList)):
            try:
                best = node.where(part, key_only=key and last)
            except TypeError:
                return best
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return best
    return best


def plain(value: Any) -> Any:
    """The same data as ordinary dicts and lists (for JSON, YAML dumping, embedding)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def from_plain(value: Any, loc: Location) -> Any:
    """Wrap plain data (an override value) so that every entry is located at ``loc``."""
    if isinstance(value, dict):
        out = YDict(loc=loc)
        for k, v in value.items():
            out.put(str(k), from_plain(v, loc), loc)
        return out
    if isinstance(value, list):
        return YList([from_plain(v, loc) for v in value], loc)
    return value


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _TooBig(Exception):
    """Raised inside the builder when the document passes a bound; carries the diagnostic."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[Diagnostic] = []
        self._scalars = yaml.SafeLoader("")
        self.count = 0
        self._open: set[int] = set()      # collections being built: one met again is an alias of itself

    def scalar(self, node: yaml.Node, path: str) -> Any:
        loc = _loc(self.file, node)
        try:
            value = self._scalars.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.errors.append(error(f"bad value: {str(exc).splitlines()[0]}", path, loc))
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
            self.errors.append(error(f"the number {str(node.value)[:30]}... is too large", path, loc,
                                     hint=f"whole numbers in a spec stay below 2**{MAX_INT_BITS}"))
            return None
        return value

    def build(self, node: yaml.Node, path: str, depth: int = 0) -> Any:
        loc = _loc(self.file, node)
        self.count += 1
        if self.count > MAX_YAML_NODES:
            raise _TooBig(error(f"the spec has more than {MAX_YAML_NODES:,} values once YAML aliases are "
                                "expanded", path, loc, hint="an alias that repeats an alias grows "
                                "exponentially; write the values out or use a block"))
        if id(node) in self._open:
            raise _TooBig(error("a YAML alias refers to a value that contains it (&a [*a]): it never ends",
                                path, loc, hint="an alias may only repeat a value defined before it, outside it"))
        if depth > MAX_YAML_DEPTH:
            raise _TooBig(error(f"values are nested more than {MAX_YAML_DEPTH} levels deep", path, loc,
                                hint="a spec needs only a few levels of nesting"))
        if node.tag not in _SAFE_TAGS:
            self.errors.append(error(
                f"YAML tag {node.tag!r} is not allowed", path, loc,
                hint="specs are plain data: remove the tag", value=node.tag))
            return None
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            self._open.add(id(node))
            try:
                return self._collection(node, path, loc, depth)
            finally:
                self._open.discard(id(node))
        return self.scalar(node, path)

    def _collection(self, node: yaml.Node, path: str, loc: Location, depth: int) -> Any:
        if isinstance(node, yaml.MappingNode):
            out = YDict(loc=loc)
            for key_node, value_node in node.value:
                key_loc = _loc(self.file, key_node)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(error("YAML merge keys (<<) are not supported", path, key_loc,
                                             hint="use a block or 'extends' to reuse layers"))
                    continue
                key = None
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _SAFE_TAGS:
                    key = self.scalar(key_node, path)
                if key is None or isinstance(key, bool) or not isinstance(key, (str, int, float)):
                    self.errors.append(error("mapping keys must be plain names", path, key_loc,
                                             hint="no tags, lists or mappings as keys"))
                    continue
                key = str(key)
                sub = f"{path}.{key}" if path else key
                if key in out:
                    first = out.where(key, key_only=True)
                    self.errors.append(error(
                        f"duplicate key {key!r} (first defined at line {first.line})", sub, key_loc,
                        value=key, hint="YAML would silently keep only the last one; remove or rename one"))
                    continue
                value = self.build(value_node, sub, depth + 1)
                out.put(key, value, _loc(self.file, value_node), key_loc)
            return out
        items = [self.build(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)]
        return YList(items, loc, [_loc(self.file, item) for item in node.value])


def position(text: str, offset: int, file: str) -> Location:
    """The line and column of a character offset in ``text``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Location(file, line, column)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _check_text(text: str, file: str) -> None:
    """Refuse, with a location, what YAML itself reports without one: size and control characters."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([error(f"the spec is {len(text):,} characters; at most {MAX_SPEC_BYTES:,} are read",
                               "", Location(file, 1, 1), hint="a spec is a small file; is this the right one?")])
    bad = _CONTROL.search(text)
    if bad:
        raise SpecError([error(f"control character {bad.group()!r} is not allowed in a spec", "",
                               position(text, bad.start(), file), hint="remove it (an editor can show it)")])


def parse_yaml(text: str, file: str = "<string>", root: str = "") -> Any:
    """Parse ``text`` into located data; raise :class:`SpecError` with every problem found.
    ``root`` is the path of the value inside the document (a ``--set`` value's key)."""
    _check_text(text, file)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except RecursionError:
        raise SpecError([error("values are nested too deeply", "", Location(file, 1, 1),
                               hint=f"a spec needs only a few levels of nesting (at most {MAX_YAML_DEPTH})")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise SpecError([error(f"YAML syntax error: {exc.problem or exc}", "", loc,
                               hint=exc.context or "check indentation and quoting")]) from None
    except yaml.YAMLError as exc:
        offset = getattr(exc, "position", None)           # a reader error: a character YAML refuses
        loc = position(text, offset, file) if isinstance(offset, int) else Location(file, 1, 1)
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise SpecError([error(f"YAML error: {reason}", "", loc)]) from None
    if node is None:
        raise SpecError([error("the spec is empty", "", Location(file, 1, 1),
                               hint="a spec needs at least 'name', 'input' and 'layers'")])
    builder = _Builder(file)
    try:
        data = builder.build(node, root)
    except _TooBig as exc:
        raise SpecError([exc.diagnostic]) from None
    if builder.errors:
        raise SpecError(builder.errors)
    return data


def looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    if "\n" in source:
        return False
    # one line: a file name, unless it is inline YAML (a spec needs at least one 'key: value')
    return source.endswith((".yaml", ".yml", ".pt", ".pth", ".safetensors")) or Path(source).is_file() or ":" not in source


_SPEC_SUFFIXES = (".yaml", ".yml")
_MAX_LISTED = 5000          # the folder entries a suggestion looks at (a huge folder is not read whole)


def close_spec_file(path: Path, fuzzy: bool = True) -> str | None:
    """The existing spec file closest to the missing ``path``, in its folder and written as the user
    wrote the folder: the same name with the other suffix (``.yaml`` for ``.yml``, either for a name
    without one), else (``fuzzy``) the file whose name, suffix aside, is closest by difflib; None when
    none is close. Never raises."""
    import difflib
    import itertools
    import os

    try:
        folder = path.parent
        if not folder.is_dir():
            return None
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in itertools.islice(entries, _MAX_LISTED)
                           if e.name.lower().endswith(_SPEC_SUFFIXES) and e.is_file())
        stem, suffix = os.path.splitext(path.name)
        if suffix.lower() not in _SPEC_SUFFIXES:
            stem, suffix = path.name, ""
        close = [stem + other for other in _SPEC_SUFFIXES if other != suffix.lower() and stem + other in names]
        if not close and fuzzy:
            by_stem = {os.path.splitext(n)[0]: n for n in reversed(names)}     # .yaml before .yml
            close = [by_stem[m] for m in difflib.get_close_matches(stem, list(by_stem), n=1, cutoff=0.6)]
    except (OSError, ValueError):       # an unreadable folder, an odd name
        return None
    if not close:
        return None
    return close[0] if str(folder) in ("", ".") else os.path.join(str(folder), close[0])


def missing_file_hint(path: Path) -> str:
    """What to say when the spec file ``path`` does not exist: the same name with the other suffix
    in its folder; for a bare file name, a shipped spec of that name (``googlenet.yml``); the closest
    spec file in its folder (:func:`close_spec_file`); a shipped spec whose name is close; else
    "check the path"."""
    import difflib

    try:
        if not path.parent.is_dir():
            return f"there is no folder {path.parent}; check the path"
        here = str(path.parent) in ("", ".")           # a bare file name: perhaps a shipped spec's
        stem = path.name.rsplit(".", 1)[0]
        shipped: list[str] = []
        if here:
            from . import zoo

            shipped = difflib.get_close_matches(stem, zoo.names(), n=1, cutoff=0.6)
        close = close_spec_file(path, fuzzy=False)
        if close is None and shipped and shipped[0] == stem:
            return f"did you mean {stem!r}, a shipped spec? 'archc zoo' lists them"
        close = close or close_spec_file(path)
        if close is not None:
            return f"did you mean {close}?"
        if shipped:
            return f"did you mean {shipped[0]!r}, a shipped spec? 'archc zoo' lists them"
    except (OSError, ValueError):
        pass
    return "check the path"


def read_text(path: Path) -> str:
    """A spec file's text; a missing, unreadable, oversized or non-UTF-8 file is a located error."""
    file = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([error(f"no such spec file: {path}", "", Location(file),
                               hint=missing_file_hint(path))]) from None
    except IsADirectoryError:
        raise SpecError([error(f"{path} is a folder, not a spec file", "", Location(file))]) from None
    except OSError as exc:
        raise SpecError([error(f"cannot read {path}: {exc.strerror or exc}", "", Location(file))]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError([error(f"the spec is larger than {MAX_SPEC_BYTES:,} bytes", "", Location(file, 1, 1),
                               hint="a spec is a small file; is this the right one?")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[:exc.start].decode("utf-8", errors="replace")
        raise SpecError([error(f"byte 0x{data[exc.start]:02x} is not UTF-8 text", "",
                               position(good, len(good), file),
                               hint="save the file as UTF-8")]) from None
