"""``torch.rename`` patterns are regular expressions from a spec, and so untrusted: a pattern such as
``(a+)+$`` backtracks exponentially and would hang archc on a long layer name.

The patterns are matched by RE2 (google-re2), whose time is linear in the text whatever the pattern:
``(a|a)*$`` against a long name takes microseconds, where Python's backtracking ``re`` takes minutes.
A pattern RE2 cannot run (back-references, look-around) is refused with its reason. The patterns are
also kept short and plain: no repetition inside a repetition, at most :data:`MAX_REPEATS` unbounded
repetitions (the rules in ``specs/googlenet-torchvision.yaml`` use one ``\\w+`` each).

A replacement may hold ``{expression}`` parts, in the expression language, over one name: ``index``,
the position (from 0, in network order) of the text the pattern matched among the distinct texts
it matches. torchvision numbers the modules of an ``nn.Sequential`` (``features.0``, ``features.2``)
and names repeated layers from 1 (``denselayer1``): ``['^(conv\\d|pool\\d)[^/]*(/\\w+)?$',
'features.{index}']`` numbers each node the pattern matches, as Sequential does.
"""

from __future__ import annotations

import re
from typing import Any

try:                                    # Python 3.11+
    from re import _constants as C
    from re import _parser as P
except ImportError:                     # pragma: no cover - Python 3.10
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse as P  # type: ignore[no-redef]

from . import expr
from .limits import MAX_REGEX_CHARS

MAX_REPEATS = 2
_REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT} | ({C.POSSESSIVE_REPEAT} if hasattr(C, "POSSESSIVE_REPEAT") else set())


def _walk(parsed: Any, inside_repeat: bool, counts: list[int]) -> str | None:
    """A reason to refuse the parsed pattern, or None."""
    for op, av in parsed:
        if op in _REPEATS:
            low, high, sub = av
            unbounded = high == C.MAXREPEAT or high > 100
            if inside_repeat and high > 1:
                return "a repetition inside a repetition (like (a+)+) can take exponential time"
            counts[0] += unbounded
            reason = _walk(sub, inside_repeat or high > 1, counts)
            if reason:
                return reason
        elif op == C.SUBPATTERN:
            reason = _walk(av[-1], inside_repeat, counts)
            if reason:
                return reason
        elif op == C.BRANCH:
            for branch in av[1]:
                reason = _walk(branch, inside_repeat, counts)
                if reason:
                    return reason
        elif op in (C.ASSERT, C.ASSERT_NOT):
            reason = _walk(av[1], inside_repeat, counts)
            if reason:
                return reason
        elif op in (C.GROUPREF, getattr(C, "GROUPREF_EXISTS", None)):
            return "back-references are not supported"
    return None


def compile_rule(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear-time matching; the ``re`` API: ``sub``, ``match.expand``);
    raises ``ValueError`` with RE2's reason for a pattern it cannot run."""
    import re2

    options = re2.Options()
    options.log_errors = False          # the reason is ours to say, not printed to stderr by RE2
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"rename pattern {pattern[:60]!r} refused: {reason}") from None


TEMPLATE = re.compile(r"\{([^{}]*)\}")


def template_parts(replacement: str) -> list[str]:
    """The ``{expression}`` parts of a replacement."""
    return TEMPLATE.findall(replacement)


def fill_template(replacement: str, index: int) -> str:
    """The replacement with each ``{expression}`` evaluated for ``index``."""
    from . import expr

    def value(m: re.Match) -> str:
        out = expr.evaluate(m.group(1), {"index": index})
        if isinstance(out, float) and out.is_integer():
            out = int(out)
        if not isinstance(out, int) or isinstance(out, bool) or out < 0:
            raise expr.ExprError(f"{{{m.group(1)}}} must give a whole number >= 0, got {out!r}")
        return str(out)
    return TEMPLATE.sub(value, replacement)


def check_pattern(pattern: str, replacement: str) -> None:
    """Raise ``ValueError`` (a located spec error once pydantic reports it) for a pattern archc
    will not run."""
    if len(pattern) > MAX_REGEX_CHARS or len(replacement) > MAX_REGEX_CHARS:
        raise ValueError(f"rename rules are at most {MAX_REGEX_CHARS} characters long")
    try:
        compiled = re.compile(pattern)
        compiled.sub(replacement, "")
        parsed = P.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"bad rename pattern {pattern[:60]!r}: {exc}") from None
    counts = [0]
    reason = _walk(parsed, False, counts)
    if reason is None and counts[0] > MAX_REPEATS:
        reason = f"more than {MAX_REPEATS} unbounded repetitions (*, +, {{n,}})"
    if reason:
        raise ValueError(f"rename pattern {pattern[:60]!r} refused: {reason}")
    compile_rule(pattern)
    from . import expr
    for part in template_parts(replacement):
        try:
            unknown = expr.names(part) - {"index"}
        except expr.ExprError as exc:
            raise ValueError(f"replacement {replacement[:60]!r}: {{{part}}}: {exc}") from None
        if unknown:
            raise ValueError(f"replacement {replacement[:60]!r}: {{{part}}} may only use 'index', "
                             f"not {', '.join(sorted(unknown))}")
    if "{" in TEMPLATE.sub("", replacement) or "}" in TEMPLATE.sub("", replacement):
        raise ValueError(f"replacement {replacement[:60]!r}: unbalanced braces")
    if compiled.groups < max((int(g) for g in re.findall(r"\\(\d+)", replacement)), default=0):
        raise ValueError(f"replacement {replacement[:60]!r} names a group the pattern does not have")


def apply_rules(rules: list[list[str]], names: list[str]) -> list[str]:
    """``names`` (all of a graph's node names, in network order) after the ``torch.rename`` rules, in
    order. A replacement's ``{index}`` is the position of the text the rule matched among the distinct
    texts it matched before, in ``names``' order (the numbering of torchvision's ``nn.Sequential``,
    parameterless modules counted). Raises ValueError, saying which rule, for a bad pattern or template."""
    for pattern, repl in rules:
        try:
            names = _apply_rule(pattern, repl, names)
        except expr.ExprError as exc:
            raise ValueError(f"torch.rename replacement {repl!r}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"bad torch.rename pattern {pattern[:60]!r}: {exc}") from None
    return names


def _apply_rule(pattern: str, repl: str, names: list[str]) -> list[str]:
    compiled = compile_rule(pattern)       # RE2: linear time, whatever the pattern
    if not template_parts(repl):
        return [compiled.sub(repl, name) for name in names]
    seen: dict[str, int] = {}

    def sub(m: Any) -> str:
        index = seen.setdefault(m.group(0), len(seen))
        return fill_template(m.expand(repl), index)
    return [compiled.sub(sub, name) for name in names]
