"""Reading YAML safely while remembering where every key and value came from.

PyYAML's composer gives nodes with marks; we build the data ourselves, so that (1) nothing but
plain data is ever constructed (no object tags, no code), (2) duplicate keys are errors instead of
silently keeping the last one, and (3) every mapping and list carries the :class:`Location` of each
of its entries.  Locations travel with the data through ``extends`` merges, edits and ``--set``
overrides, so ``archc resolve`` can say where each value came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import Diagnostic, Location, SpecError, error

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


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[Diagnostic] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: str) -> Any:
        loc = _loc(self.file, node)
        if node.tag not in _SAFE_TAGS:
            self.errors.append(error(
                f"YAML tag {node.tag!r} is not allowed", path, loc,
                hint="specs are plain data: remove the tag", value=node.tag))
            return None
        if isinstance(node, yaml.MappingNode):
            out = YDict(loc=loc)
            for key_node, value_node in node.value:
                key_loc = _loc(self.file, key_node)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(error("YAML merge keys (<<) are not supported", path, key_loc,
                                             hint="use a block or 'extends' to reuse layers"))
                    continue
                key = self._scalars.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if key is None or isinstance(key, bool) or not isinstance(key, (str, int, float)):
                    self.errors.append(error("mapping keys must be plain names", path, key_loc))
                    continue
                key = str(key)
                sub = f"{path}.{key}" if path else key
                if key in out:
                    first = out.where(key, key_only=True)
                    self.errors.append(error(
                        f"duplicate key {key!r} (first defined at line {first.line})", sub, key_loc,
                        value=key, hint="YAML would silently keep only the last one; remove or rename one"))
                    continue
                value = self.build(value_node, sub)
                out.put(key, value, _loc(self.file, value_node), key_loc)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = [self.build(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            return YList(items, loc, [_loc(self.file, item) for item in node.value])
        try:
            return self._scalars.construct_object(node)
        except yaml.YAMLError as exc:
            self.errors.append(error(f"bad scalar: {exc}", path, loc))
            return None


def parse_yaml(text: str, file: str = "<string>") -> Any:
    """Parse ``text`` into located data; raise :class:`SpecError` with every problem found."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise SpecError([error(f"YAML syntax error: {exc.problem or exc}", "", loc,
                               hint=exc.context or "check indentation and quoting")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([error(f"YAML error: {exc}", "", Location(file, 1, 1))]) from None
    if node is None:
        raise SpecError([error("the spec is empty", "", Location(file, 1, 1),
                               hint="a spec needs at least 'name', 'input' and 'layers'")])
    builder = _Builder(file)
    data = builder.build(node, "")
    if builder.errors:
        raise SpecError(builder.errors)
    return data


def looks_like_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    if "\n" in source:
        return False
    # one line: a file name, unless it is inline YAML (a spec needs at least one 'key: value')
    return source.endswith((".yaml", ".yml", ".pt")) or Path(source).is_file() or ":" not in source


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([error(f"no such spec file: {path}", "", Location(str(path)),
                               hint="check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([error(f"cannot read {path}: {exc}", "", Location(str(path)))]) from None
