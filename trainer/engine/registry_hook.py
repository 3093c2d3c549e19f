"""Training hook that records a run in the model registry and registers the final model.

``before_train`` opens an MLflow run and logs the resolved recipe as params; ``after_step`` logs
losses and lr; ``after_eval`` logs the COCO metrics; ``after_train`` uploads the final checkpoint,
``metrics.jsonl``, ``recipe.json`` and a training-curve plot, registers a model version tagged with
init, recipe, dataset, ap_box, ap_mask, sha256 and code_version, and closes the run.

Only the main process talks to the registry. A registry hiccup while logging per-step metrics is
reported once as a warning and training continues; failing to register at the end raises.
"""

from __future__ import annotations

import math
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitbench.fileio import atomic_path
from vitbench.registry.client import ModelVersionInfo, RegistryClient, RegistryError
from vitbench.trainer.engine.hooks import Hook, LoopState
from vitbench.trainer.rundir import RunDir


def code_version(repo_dir: Path | None = None) -> str:
    """``git:<short sha>[-dirty]`` of the vitbench checkout, else ``vitbench <package version>``."""
    where = repo_dir or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if sha.returncode == 0 and sha.stdout.strip():
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=5,
            )
            dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
            return f"git:{sha.stdout.strip()}{dirty}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"vitbench {version('vitbench')}"
    except PackageNotFoundError:
        return "vitbench (unknown version)"


def _fmt_ap(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


class RegistryHook(Hook):
    """Log a training run to the registry and register its final checkpoint as a model version.

    Args:
        client: the registry to write to.
        model_name: registered model name the final checkpoint becomes a version of.
        experiment: MLflow experiment that holds the run (created if missing).
        tags: extra version tags (strings); the hook adds init, recipe, dataset, ap_box, ap_mask,
            sha256 (via the client), code_version.
        run_name: MLflow run name; default: the output folder's name.
        version_of_code: override for the code_version tag (default: :func:`code_version`).
    """

    def __init__(
        self,
        client: RegistryClient,
        model_name: str,
        experiment: str,
        tags: Mapping[str, str] | None = None,
        *,
        run_name: str | None = None,
        version_of_code: str | None = None,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.experiment = experiment
        self.tags = dict(tags or {})
        self.run_name = run_name
        self.version_of_code = version_of_code
        self.run_id: str | None = None
        self.version: ModelVersionInfo | None = None
        self.last_eval: dict[str, float] = {}
        self._history: dict[str, list[tuple[int, float]]] = {}
        self._warned = False

    # ------------------------------------------------------------------ helpers
    def _warn(self, what: str, exc: Exception) -> None:
        if not self._warned:
            warnings.warn(
                f"registry: {what} failed, continuing without it: {exc}", RuntimeWarning, stacklevel=3
            )
            self._warned = True

    def _record(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(v):
                clean[key] = v
                self._history.setdefault(key, []).append((step, v))
        return clean

    def _plot(self, out_dir: Path) -> Path | None:
        """Write ``training_curves.png`` (losses, lr, AP against iteration); None without data."""
        if not self._history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        losses = {k: v for k, v in self._history.items() if k.startswith("loss")}
        aps = {k: v for k, v in self._history.items() if k in ("bbox/AP", "segm/AP")}
        lr = self._history.get("lr")
        panels = [p for p in (("loss", losses), ("lr", {"lr": lr} if lr else {}), ("AP", aps)) if p[1]]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
        for ax, (title, series) in zip(axes[0], panels, strict=True):
            for key, points in sorted(series.items()):
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=key, marker="o" if len(points) < 10 else None)
            ax.set_title(title)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            if len(series) > 1 or title == "AP":
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "training_curves.png"
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        return path

    def _log_run_files(self, out_dir: Path, *extra: Path) -> None:
        """Upload the run's metrics (under ``metrics/``), resolved recipe, ``extra`` files that exist and
        the training-curves plot (under ``plots/``) as artifacts of the run."""
        run, run_id = RunDir(out_dir), self.run_id
        assert run_id is not None, "the run is opened in before_train"
        for path, folder in ((run.metrics, "metrics"), (run.recipe, None), *((p, None) for p in extra)):
            if path.is_file():
                self.client.log_artifact(run_id, path, folder)
        plot = self._plot(out_dir)
        if plot is not None:
            self.client.log_artifact(run_id, plot, "plots")

    def _register(self, path: Path, tags: Mapping[str, Any], description: str) -> None:
        """Register ``path`` as a new version of the run, tagged ``tags`` + ``code_version`` + the hook's
        own tags (which win), described by ``description`` formatted with those tags; finish the run."""
        assert self.run_id is not None, "the run is opened in before_train"
        version_tags = {**tags, "code_version": self.version_of_code or code_version(), **self.tags}
        self.version = self.client.register_version(
            self.model_name, self.run_id, path, version_tags, description=description.format(**version_tags)
        )
        self.client.end_run(self.run_id, "FINISHED")

    def run_tags(self, loop: LoopState) -> dict[str, str]:
        """Tags of the MLflow run: init, recipe name, dataset, output folder."""
        meta = loop.meta
        return {
            "init": str(meta.get("init", "")),
            "recipe": str(self._recipe_dict(loop).get("name", "")),
            "dataset": str(meta.get("dataset", "")),
            "out_dir": str(loop.out_dir),
        }

    def run_params(self, loop: LoopState) -> dict[str, Any]:
        """Params of the MLflow run (before the schedule's): the resolved recipe, flattened by the
        client, plus init, dataset and class count."""
        meta = loop.meta
        return {
            **self._recipe_dict(loop),
            "init": meta.get("init", ""),
            "dataset": meta.get("dataset", ""),
            "num_classes": meta.get("num_classes", ""),
        }

    @staticmethod
    def _recipe_dict(loop: LoopState) -> dict[str, Any]:
        recipe = loop.recipe
        return recipe.model_dump(mode="json") if hasattr(recipe, "model_dump") else dict(recipe)

    # ------------------------------------------------------------------ hook points
    def before_train(self, loop: LoopState) -> None:
        """Open the run with :meth:`run_tags`; log :meth:`run_params` plus ``max_iters`` and the
        iteration it starts from as params."""
        if not loop.is_main:
            return
        self.run_id = self.client.start_run(
            self.experiment, self.run_name or Path(loop.out_dir).name, self.run_tags(loop)
        )
        params = {**self.run_params(loop), "max_iters": loop.max_iters, "start_iteration": loop.iteration}
        self.client.log_params(self.run_id, params)

    def after_step(self, loop: LoopState, metrics: Mapping[str, float]) -> None:
        """Log losses, lr and timings at the current iteration."""
        if not loop.is_main or self.run_id is None:
            return
        clean = self._record(metrics, loop.iteration)
        try:
            self.client.log_metrics(self.run_id, clean, step=loop.iteration)
        except RegistryError as exc:
            self._warn("logging step metrics", exc)

    def after_eval(self, loop: LoopState, results: Mapping[str, float]) -> None:
        """Log COCO metrics (``bbox/AP``, ``segm/AP``, ...) with the epoch; keep the latest for the tags."""
        if not loop.is_main or self.run_id is None:
            return
        clean = self._record({**results, "epoch": float(loop.epoch)}, loop.iteration)
        self.last_eval.update(clean)
        try:
            self.client.log_metrics(self.run_id, clean, step=loop.iteration)
        except RegistryError as exc:
            self._warn("logging evaluation metrics", exc)

    def after_train(self, loop: LoopState) -> None:
        """Upload artifacts, register the final checkpoint as a new version and finish the run."""
        if not loop.is_main or self.run_id is None:
            return
        out_dir = Path(loop.out_dir)
        run = RunDir(out_dir)
        final = run.final_model
        if not final.is_file():
            self.client.end_run(self.run_id, "FAILED")
            raise RegistryError(f"cannot register: the final checkpoint {final} does not exist")
        self._log_run_files(out_dir)
        recipe = loop.recipe
        meta = loop.meta
        version_tags: dict[str, Any] = {
            "init": meta.get("init", ""),
            "recipe": getattr(recipe, "name", None) or recipe["name"],
            "dataset": meta.get("dataset", ""),
            "ap_box": _fmt_ap(self.last_eval.get("bbox/AP")),
            "ap_mask": _fmt_ap(self.last_eval.get("segm/AP")),
            "iteration": loop.iteration,
        }
        self._register(final, version_tags, "{recipe} / {init} on {dataset}")
