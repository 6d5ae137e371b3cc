"""``archc sweep --train``: a short training of every variant, each a trial of an Optuna study.

The study lives in ``DIR/sweep.db`` (SQLite): Optuna's GridSampler hands each variant to exactly one
trial, so an interrupted sweep resumes where it stopped (finished trials are not run again) and
several processes given the same folder share the variants between them. A trial that fails (a
variant that does not train, an error in its data) is recorded with its error and the others go on.
Each trial's run folder (``archc train``'s: metrics, curves, checkpoints) is ``DIR/trials/N``.
Needs ``pip install optuna`` (``archcompiler[sweep]``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ArchcError, RunError, error
from ..options import TrainOptions
from ..spec import Spec

STUDY = "archc-sweep"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise RunError([error("training a sweep needs Optuna, which is not installed", "--train",
                               hint="pip install optuna (or pip install 'archcompiler[sweep]')")]) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:120] or "variant"


def train_variants(spec: Spec, rows: list[dict[str, Any]], data: str | Path, directory: Path,
                   options: TrainOptions) -> dict[str, dict[str, Any]]:
    """Train each valid variant (``rows``: the sweep's, each with ``name`` and ``sets``) as one trial
    with ``options`` (each trial's run folder its own, under ``directory/trials``);
    return per variant name ``accuracy`` (best validation accuracy, or the last training accuracy
    without validation images), ``trial`` (its number) and ``trial_state``; a failed trial gives
    ``accuracy`` None and its ``train_error``. Trials already finished in the study are read, not run."""
    from ..training.loop import train
    from .grid import overrides

    optuna = _optuna()
    directory.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{directory.resolve() / 'sweep.db'}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    names = [r["name"] for r in rows]
    sets = {r["name"]: r["sets"] for r in rows}
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.GridSampler({"variant": names}, seed=0))

    def objective(trial: Any) -> float:
        name = trial.suggest_categorical("variant", names)
        try:
            result = train(spec, data, options.replace(out=directory / "trials" / f"{trial.number}-{slug(name)}",
                                                       resume=False), overrides=overrides(sets[name]))
        except ArchcError as exc:
            trial.set_user_attr("error", "; ".join(d.format() for d in exc.errors))
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        if result.best:
            return float(result.best.get("val_miou", result.best["val_accuracy"]))   # a segmentation run: mean IoU
        return float(result.history[-1]["train_accuracy"])

    def finished() -> set[str]:
        return {t.params["variant"] for t in study.get_trials(deepcopy=False)
                if t.state.is_finished() and t.params.get("variant") in sets}

    left = len(set(names) - finished())
    if left:
        study.optimize(objective, n_trials=left, catch=(Exception,))
    out: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False):
        name = t.params.get("variant")
        if name not in sets or not t.state.is_finished():
            continue
        if name in out and out[name]["trial_state"] == "COMPLETE":
            continue        # a completed trial wins over a failed one of the same variant
        out[name] = {"accuracy": t.value if t.state.name == "COMPLETE" else None, "trial": t.number,
                     "trial_state": t.state.name, "train_error": t.user_attrs.get("error")}
    return out


__all__ = ["train_variants", "STUDY"]
