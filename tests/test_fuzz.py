"""Bad input never ends in a traceback: random mutations of shipped specs either analyse or raise
archc's own located errors."""

from __future__ import annotations

import copy
import random

import pytest
import yaml
from conftest import SPECS

import archcompiler
from archcompiler import ArchcError

VALUES = [3, 5, 7, 11, 64, 100, 2, 4, "[3, 1]", [2, 1], "relu", "batch_norm", "conv", "concat", "inception_4a",
          "aux1", None, -1, 0, 1, 2.5, "x", "", "same", [], [1], [1, 2, 3], {}, {"a": 1}, True,
          "num_classes * 2", "1/0", "round_to(", 10**12, "in", "input", "__import__('os')"]
KEYS = ["zzz", "op", "name", "input", "inputs", "use", "table", "claims", "args", "extends", "edits"]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, r: random.Random):
    doc = copy.deepcopy(doc)
    candidates = [p for p in _paths(doc) if p]
    for _ in range(r.randint(1, 3)):
        path = r.choice(candidates)
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            roll = r.random()
            if roll < 0.7:
                node[path[-1]] = r.choice(VALUES)
            elif roll < 0.85 and isinstance(node, dict):
                node[r.choice(KEYS)] = r.choice(VALUES)
            else:
                del node[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass
    return doc


@pytest.mark.parametrize("name", ["googlenet.yaml", "resnet18.yaml", "vgg16.yaml"])
def test_mutated_specs_fail_cleanly(name):
    doc = yaml.safe_load((SPECS / name).read_text())
    r = random.Random(name)
    for _ in range(80):
        text = yaml.safe_dump(_mutate(doc, r), sort_keys=False)
        try:
            archcompiler.analyze(text)
        except ArchcError as exc:
            assert exc.errors and all(d.message for d in exc.errors)


def test_mutated_yaml_text_fails_cleanly():
    text = (SPECS / "googlenet.yaml").read_text()
    r = random.Random(7)
    for _ in range(60):
        chars = list(text)
        for _ in range(r.randint(1, 4)):
            i = r.randrange(len(chars))
            chars[i] = r.choice(["", ":", "-", "{", "]", " ", "\t", "x", "0", "'", "&", "*", "!"])
        try:
            archcompiler.analyze("".join(chars))
        except ArchcError as exc:
            assert exc.errors[0].line >= 0
