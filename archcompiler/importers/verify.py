"""Checking an import before it is written: the spec is built, the source's weights are loaded into it,
and both run on one seeded input; a spec that computes anything else is never written.

The weights are perturbed first, in both the same way (BatchNorm statistics drawn anew, every other tensor
moved a little): a fresh module's running mean 0 and variance 1 make many wirings agree by accident (two
BatchNorms in another order, a shortcut read from the wrong side of a norm), and a zero-initialised head
(timm's MLP-Mixer) makes the outputs 0 whatever the rest computes. The outputs must agree within ``TOLERANCE`` of the largest output; where they
do not, the first layer (module path, in the order the built spec runs them) whose output differs is
named.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

TOLERANCE = 1e-4        # of the largest |output|: float32 sums in another order stay far below it
SEED = 0


@dataclass(frozen=True)
class Verdict:
    """What the check found: ``ok``; the largest difference of the outputs, relative to the largest
    output; the first layer whose output differs (a module path) and, when not ``ok``, why."""

    ok: bool
    difference: float = 0.0
    first: str | None = None
    why: str = ""
    checked: bool = True            # False: the source could not be run outside the trace (``why`` says why)
    node: str = ""                  # the source's node that computes ``first``'s output (ONNX: its name, op type)
    agrees: str = ""                # the compared layer before ``first``, whose output agrees (ONNX)

    def describe(self) -> str:
        if not self.checked:
            return self.why
        if self.ok:
            return f"verified: the spec's outputs equal the source's (largest difference {self.difference:.1e})" + \
                (" (onnxruntime)" if "onnxruntime" in self.why else "")
        where = f"; the first layer whose output differs is {self.first}" if self.first else ""
        where += f", computed by the file's node {self.node}" if self.first and self.node else ""
        where += f", after {self.agrees}, whose output agrees (the layers without weights between them are " \
                 "not compared)" if self.first and self.agrees else ""
        return f"{self.why}{where}"


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for v in value:
            found = _first_tensor(v)
            if found is not None:
                return found
    return None


def _perturbed(state: dict[str, Any], seed: int) -> dict[str, Any]:
    """The state with every BatchNorm's running statistics drawn from a seeded generator, and every other
    floating tensor moved a little (trained-like): a zero-initialised head (timm's MLP-Mixer) would make
    the outputs 0 whatever the rest computes, and equal fresh tensors hide which one is read."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        noise = torch.randn(value.shape, generator=gen, dtype=torch.float32)
        if key.endswith("running_var"):
            out[key] = (noise.abs() * 0.5 + 0.5).to(value.dtype)
        elif key.endswith("running_mean"):
            out[key] = (noise * 0.1).to(value.dtype)
        else:
            out[key] = value + (noise * 0.02).to(value.dtype)
    return out


def _recorder(model: Any, names: list[str], keep: Any = None) -> tuple[dict[str, Any], list[Any]]:
    """Forward hooks on the named sub-modules that record, in the order they run, what ``keep`` makes of each
    one's first output (default: a copy of the tensor; None where it gives no tensor); and their handles."""
    seen: dict[str, Any] = {}
    handles = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue

        def hook(mod: Any, args: Any, output: Any, name: str = name) -> None:
            if name not in seen:                       # a module used twice: its first use
                t = _first_tensor(output)
                seen[name] = None if t is None else keep(t) if keep else t.detach().clone()
        handles.append(module.register_forward_hook(hook))
    return seen, handles


def gives_probabilities(built: Any) -> bool:
    """Whether the spec's main output ends in its probability softmax, which the built module's forward
    leaves out (it gives the logits it trains on) and ``predict_proba`` applies: what the source computes."""
    return hasattr(built, "predict_proba") and built.LOSSES[next(iter(built.LOSSES))][2] is True


def compare(source: Any, built: Any, shape: tuple[int, ...], seed: int = SEED) -> Verdict:
    """Run ``source`` and ``built`` (which has its state_dict keys) on one seeded batch of two, in
    evaluation mode, with the same perturbed BatchNorm statistics; ``source`` is left as it was."""
    import torch

    state = source.state_dict()
    perturbed = _perturbed(state, seed)
    try:
        built.load_state_dict(perturbed, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return Verdict(False, why=f"the source's weights do not load into the spec: {' '.join(lines[1:2] or lines)[:300]}")
    twin = copy.deepcopy(source)
    twin.load_state_dict(perturbed, strict=True)
    twin.eval()
    built.eval()
    names = [n for n, m in built.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    got, got_handles = _recorder(built, names)
    want, want_handles = _recorder(twin, names)
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            try:
                reference = _first_tensor(twin(x.clone()))
            except Exception as exc:  # noqa: BLE001 (the user's module refused the input: nothing to compare)
                return Verdict(True, why=f"not verified: the module does not run on a {'x'.join(map(str, shape))} "
                                         f"input outside the trace ({type(exc).__name__}: {str(exc)[:120]})",
                               checked=False)
            output = _first_tensor(built.predict_proba(x.clone()) if gives_probabilities(built) else built(x.clone()))
    finally:
        for h in (*got_handles, *want_handles):
            h.remove()
    if reference is None or output is None or reference.shape != output.shape:
        return Verdict(False, why=f"the spec's output has shape {None if output is None else tuple(output.shape)}, "
                                  f"the source's {None if reference is None else tuple(reference.shape)}")
    scale = max(float(reference.abs().max()), 1e-12)
    difference = float((reference - output).abs().max()) / scale
    if difference <= TOLERANCE:
        return Verdict(True, difference)
    first = None
    for name in got:               # in the order the built spec ran them
        a, b = got[name], want.get(name)
        if a is None or b is None or a.shape != b.shape:
            continue
        if float((a - b).abs().max()) > TOLERANCE * max(float(b.abs().max()), 1e-12):
            first = name
            break
    return Verdict(False, difference, first,
                   f"the spec computes something else than the source: its outputs differ by {difference:.2g} of "
                   f"the largest")


def check_torch(source: Any, text: str, shape: tuple[int, ...]) -> Verdict:
    """Build the spec ``text`` and compare it with the torch module ``source`` on a seeded input."""
    from ..backends.torch import build
    from ..spec import load_spec

    built = build(load_spec(text), seed=SEED, check_memory=False)
    return compare(source, built, shape)


def verified_spec(source: Any, flat: Any, schema: str = "archc.schema.json", blocks: bool = True,
                  verify: bool = True) -> tuple[str, list[str]]:
    """The spec text of the traced ``flat`` of the torch module ``source``, and what to tell the user.
    With ``verify``, the spec is built and compared with ``source`` (:func:`check_torch`): a readable form
    (blocks and tables) that computes anything else falls back to one layer per line, which is said; where
    that differs too, nothing is returned but a :class:`~archcompiler.errors.BackendError` naming the first
    layer whose output differs (never a silently different spec)."""
    from ..errors import ArchcError, BackendError, error
    from ..spec import load_spec
    from .structure import spec_text

    pristine = copy.deepcopy(flat) if blocks else flat     # (writing blocks reshapes what it is given)
    text = spec_text(flat, schema=schema, blocks=blocks)
    try:
        load_spec(text)
    except ArchcError as exc:       # a block's arguments written as expressions some use cannot take
        if not blocks:
            raise
        first = exc.errors[0]
        text = spec_text(pristine, schema=schema, blocks=False)
        load_spec(text)
        blocks, notes = False, [f"the spec with blocks and tables did not load ({first.path}: {first.message}); "
                                "wrote one layer per line instead"]
    else:
        notes = []
    if not verify:
        return text, [*notes, "not verified (--no-verify): the spec was not compared with the module"]
    verdict = check_torch(source, text, flat.input)
    if verdict.ok:
        return text, [*notes, verdict.describe()]
    if blocks:
        flat_text = spec_text(pristine, schema=schema, blocks=False)
        flat_verdict = check_torch(source, flat_text, flat.input)
        if flat_verdict.ok:
            return flat_text, [f"the spec with blocks and tables computed something else ({verdict.describe()}); "
                               "wrote one layer per line instead, which is exact", flat_verdict.describe()]
    raise BackendError([error(f"the spec read from {flat.source or flat.name} does not compute what the module "
                              f"does: {verdict.describe()}", verdict.first or "import",
                              hint="this is a bug in archc's import; please report it with the model "
                                   "(--no-verify writes the spec anyway)")])


def check_onnx(path: Any, text: str, state: dict[str, Any], probes: dict[str, tuple[str, bool]] | None = None) \
        -> Verdict:
    """Build the spec ``text`` with the weights the ONNX import read (``state``: numpy arrays by state_dict
    key) and compare it with onnxruntime running the file on one seeded input (an optional dependency:
    without it the import is unverified, and says so). Where they differ, ``probes`` (module path -> the
    file's value holding that layer's output, and whether it is channels-last) name the first layer whose
    output differs."""
    try:
        import onnxruntime
    except ImportError:
        return Verdict(True, checked=False, why="not verified: onnxruntime is not installed (pip install "
                                                "onnxruntime compares the spec with the file)")
    import numpy as np
    import torch

    from ..backends.torch import build
    from ..errors import ArchcError
    from ..spec import load_spec

    spec = load_spec(text)
    try:
        built = build(spec, seed=SEED, check_memory=False,
                      weights={k: torch.from_numpy(np.array(v)) for k, v in state.items()}).eval()
    except ArchcError as exc:       # the tensors read do not fit the layers read (a file that contradicts itself)
        return Verdict(False, why=f"the weights read from the file do not fit the spec read from it: "
                                  f"{exc.errors[0].message}")
    c, h, w = spec.input
    x = np.random.default_rng(SEED).normal(size=(1, c, h, w)).astype(np.float32)
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        dims = list(feed.shape[1:])
        given = x.transpose(0, 2, 3, 1) if dims == [h, w, c] and dims != [c, h, w] else x     # an NHWC file
        reference = np.asarray(session.run(None, {feed.name: given})[0], dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 (onnxruntime refuses the file, or fails on it: nothing to compare)
        reason = " ".join(str(exc).split())[:160]
        reason = reason if reason.isprintable() else repr(reason)[1:-1]
        return Verdict(True, checked=False, why=f"not verified: onnxruntime does not run the file ({reason})")
    with torch.no_grad():
        tensor = torch.from_numpy(x)
        output = (built.predict_proba(tensor) if gives_probabilities(built) else built(tensor)).numpy()
    if reference.shape != output.shape:
        return Verdict(False, why=f"the spec's output has shape {output.shape}, onnxruntime's {reference.shape}")
    difference = float(np.abs(reference - output).max()) / max(float(np.abs(reference).max()), 1e-12)
    if difference <= TOLERANCE:
        return Verdict(True, difference, why="verified against onnxruntime")
    first, node, agrees = _first_onnx_difference(path, built, tensor, given, probes or {})
    return Verdict(False, difference, first, why=f"the spec computes something else than the file (onnxruntime): its "
                                                 f"outputs differ by {difference:.2g} of the largest", node=node,
                   agrees=agrees)


# the file's values that one more onnxruntime run returns beside its output, at most (float32 elements, 256 MB
# on each side): a larger model's layers are compared in consecutive groups, one run each, until one differs
MAX_PROBE_ELEMENTS = 1 << 26
MAX_PROBE_RUNS = 8


def _first_onnx_difference(path: Any, built: Any, x: Any, given: Any, probes: dict[str, tuple[str, bool]]) \
        -> tuple[str | None, str, str]:
    """The first layer, in the order the built spec runs them, whose module's output differs from the value
    of the file that holds it, the file's node that computes that value ("NAME (OP)") and the layer compared
    before it, whose output agrees; (None, "", "") where none can be told. onnxruntime is run again with those values added as outputs: in groups of at most
    ``MAX_PROBE_ELEMENTS`` elements (what it keeps), at most ``MAX_PROBE_RUNS`` runs."""
    import onnx

    from .onnx.graph import safe_text

    order = _run_order(built, x, list(probes))
    if not order:
        return None, "", ""
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception:  # noqa: BLE001 (the file cannot be read again: the difference stays unlocated)
        return None, "", ""
    producer = {o: node for node in model.graph.node for o in node.output}
    groups: list[list[str]] = [[]]
    size = 0
    for name, elements in order:
        if groups[-1] and size + elements > MAX_PROBE_ELEMENTS:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += elements
    agrees = ""
    for group in groups[:MAX_PROBE_RUNS]:
        first, agrees = _first_in(model, built, x, given, {name: probes[name] for name in group}, agrees)
        if first is not None:
            node = producer.get(probes[first][0])
            return first, "" if node is None else f"{safe_text(node.name) or '(unnamed)'} ({safe_text(node.op_type, 60)})", \
                agrees
        if first is None and agrees is None:          # (onnxruntime gave no values)
            break
    return None, "", ""


def _run_order(built: Any, x: Any, names: list[str]) -> list[tuple[str, int]]:
    """The probed layers in the order the built spec runs them, with the number of elements of each output
    (one run that keeps no tensor)."""
    import math

    import torch

    seen, handles = _recorder(built, names, keep=lambda t: math.prod(t.shape))
    try:
        with torch.no_grad():
            built(x)
    finally:
        for h in handles:
            h.remove()
    return [(name, n) for name, n in seen.items() if n is not None]


def _first_in(model: Any, built: Any, x: Any, given: Any, probes: dict[str, tuple[str, bool]], agrees: str) \
        -> tuple[str | None, str | None]:
    """The first of ``probes``' layers (in the order the built spec runs them) whose output differs from the
    file's value that holds it, and the last one before it whose output agrees (``agrees`` where none here
    does); onnxruntime returns those values alone beside the file's outputs. (None, None): it gave none."""
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    got, handles = _recorder(built, list(probes))
    try:
        with torch.no_grad():
            built(x)
    finally:
        for h in handles:
            h.remove()
    wanted = {probes[name][0] for name in got}
    try:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        known = {o.name for o in probe.graph.output}
        types = {v.name: v.type.tensor_type.elem_type for v in probe.graph.value_info}
        probe.graph.output.extend(onnx.helper.make_tensor_value_info(v, types.get(v) or onnx.TensorProto.FLOAT, None)
                                  for v in sorted(wanted - known))
        options = onnxruntime.SessionOptions()      # (unoptimized: a graph of 10,000 nodes starts in a second)
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: given}), strict=True))
    except Exception:  # noqa: BLE001 (the file's values cannot be had: the difference stays unlocated)
        return None, None
    for name, mine in got.items():               # in the order the built spec ran them
        value, last = probes[name]
        theirs = values.get(value)
        if mine is None or theirs is None:
            continue
        theirs = np.asarray(theirs, dtype=np.float32)
        if last and theirs.ndim == 4:
            theirs = theirs.transpose(0, 3, 1, 2)
        mine = mine.numpy()
        if mine.shape != theirs.shape:
            continue
        if float(np.abs(mine - theirs).max()) > TOLERANCE * max(float(np.abs(theirs).max()), 1e-12):
            return name, agrees
        agrees = name
    return None, agrees
