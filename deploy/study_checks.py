"""Checks that a study's runs can start, done before any manifest is rendered or submitted.

:class:`~vitbench.deploy.jobs.StudySpec` validates the Kubernetes side; this module checks what the
trainer in each pod would refuse only after the pod was scheduled (and a GPU node was held):

* every init that loads pretrained weights has them (``random`` loads none);
* a weights path that is not a URI is a file on the weights volume: it must sit under ``/weights`` and
  the study must mount that volume (``weights_pvc``);
* every init applies to the recipe's backbone (``moby`` is for Swin);
* the recipe overrides (``--set``) resolve for every init, the way ``vitbench train`` resolves them:
  built-in recipe → the init's tuned overrides → the overrides (unknown keys, bad types such as
  ``solver.lr=abc`` and out-of-range values such as ``solver.max_iters=-5`` are named).

The recipe and init catalogs are torch-free; without the trainer package installed only the weights
checks run (the trainer image checks the rest when the Job starts).
"""

from __future__ import annotations

from vitbench.deploy.jobs import WEIGHTS_MOUNT, StudySpec, is_registry_reference

#: Inits that train from scratch and take no weights file (the catalog's ``needs_weights`` is False).
INITS_WITHOUT_WEIGHTS = ("random",)


class StudyError(ValueError):
    """The study's runs could not start; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _needs_weights(init: str) -> bool:
    try:
        from vitbench.trainer.inits.catalog import get_init
    except ImportError:  # pragma: no cover - the trainer is not installed
        return init not in INITS_WITHOUT_WEIGHTS
    return get_init(init).needs_weights


def weights_problems(study: StudySpec) -> list[str]:
    """Inits that need weights and have none; local weights paths that no volume provides."""
    problems = []
    for init in study.inits:
        uri = study.weights.get(init)
        if uri is None:
            if _needs_weights(init):
                problems.append(
                    f"init {init!r} needs pretrained weights: pass --weights {init}=s3://... (or https://), "
                    f"or --weights-pvc PVC --weights {init}={WEIGHTS_MOUNT}/FILE"
                )
            continue
        if "://" in uri or is_registry_reference(uri):  # the trainer downloads these in the pod
            continue
        if not uri.startswith(f"{WEIGHTS_MOUNT}/"):
            problems.append(
                f"weights for {init!r} ({uri}) are not a path inside the pod: files come from the weights "
                f"volume at {WEIGHTS_MOUNT}/ (--weights-pvc), or use an s3:// or https:// URI"
            )
        elif study.weights_pvc is None:
            problems.append(
                f"weights for {init!r} point at {uri}, but no weights volume is mounted: "
                f"pass --weights-pvc with the PVC that holds it"
            )
    return problems


def recipe_problems(study: StudySpec) -> list[str]:
    """The recipe each init would train (with the overrides), or what is wrong with it."""
    try:
        from vitbench.trainer.inits import InitError
        from vitbench.trainer.inits.overrides import apply_init_overrides
        from vitbench.trainer.recipes import RecipeError, apply_overrides, get_recipe
    except ImportError:  # pragma: no cover - the trainer is not installed
        return []
    try:
        base = get_recipe(study.recipe)
    except RecipeError as exc:
        return [str(exc)]
    from vitbench.trainer.inits.catalog import get_init

    problems = []
    for init in study.inits:
        kinds = get_init(init).applies_to
        if base.backbone.kind not in kinds:
            problems.append(
                f"init {init!r} does not apply to recipe {study.recipe!r} (backbone {base.backbone.kind}); "
                f"it applies to backbone kinds {', '.join(kinds)}"
            )
            continue
        try:
            apply_overrides(apply_init_overrides(base, init), list(study.overrides))
        except (RecipeError, InitError) as exc:
            problem = f"{init}: {exc}"
            if problem.partition(": ")[2] not in {p.partition(": ")[2] for p in problems}:
                problems.append(problem)  # the same bad override fails every init: say it once
    return problems


def check_study(study: StudySpec) -> None:
    """Raise :class:`StudyError` naming every reason one of the study's runs could not start."""
    problems = weights_problems(study) + recipe_problems(study)
    if problems:
        raise StudyError(problems)
