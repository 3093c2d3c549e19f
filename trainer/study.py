"""The study's table and convergence plot from a folder of runs (``<out>/<init>/``) or the registry.

Each run folder is what ``vitbench train`` writes: ``eval.json`` (final metrics, wall time),
``metrics.jsonl`` (train and eval lines with ``epoch``) and ``recipe.json``. :func:`write_report`
writes ``study.md`` (Markdown table), ``study.csv`` and ``study_ap_vs_epoch.png`` into the folder.
Columns: init, APbox, APmask, AP50 and AP75 (box), epochs, iterations, wall time.
:func:`runs_from_registry` builds the same rows from registered model versions and their runs.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitbench.fileio import atomic_path, atomic_write_text
from vitbench.trainer.inits.catalog import get_init, list_inits
from vitbench.trainer.rundir import RunDir

if TYPE_CHECKING:
    from vitbench.registry.client import ModelVersionInfo, RegistryClient
    from vitbench.trainer.recipes import Recipe

WEIGHTS_ENV_PREFIX = "VITBENCH_WEIGHTS_"

# The catalog's order (the paper's order of initializations first); unknown names follow alphabetically.
INIT_ORDER: tuple[str, ...] = tuple(list_inits())


@dataclass(frozen=True)
class PlannedRun:
    """An init of the study: run it with ``weights`` or skip it for ``skip_reason``."""

    init: str
    weights: str | None
    skip_reason: str | None = None


def parse_weights(items: Sequence[str]) -> dict[str, str]:
    """``["mae=/p/mae.pth", ...]`` → ``{"mae": "/p/mae.pth"}``; raises ValueError naming a bad item."""
    out: dict[str, str] = {}
    for item in items:
        init, sep, uri = item.partition("=")
        if not sep or not init.strip() or not uri.strip():
            raise ValueError(
                f"--weights {item!r}: expected INIT=URI, e.g. mae=/ckpt/mae_pretrain_vit_base.pth"
            )
        out[init.strip()] = uri.strip()
    return out


def plan_runs(
    inits: Sequence[str], recipe: Recipe, weights: Mapping[str, str], env: Mapping[str, str]
) -> list[PlannedRun]:
    """Decide per init whether it can run: known init (else :class:`InitError`), applies to the recipe's
    backbone, weights at hand (``weights`` or ``VITBENCH_WEIGHTS_<INIT>`` in ``env``)."""
    plan: list[PlannedRun] = []
    for init in inits:
        spec = get_init(init)
        uri = weights.get(init) or env.get(WEIGHTS_ENV_PREFIX + init.upper()) or None
        if recipe.backbone.kind not in spec.applies_to:
            reason = f"does not apply to recipe {recipe.name!r} (backbone {recipe.backbone.kind!r})"
            plan.append(PlannedRun(init, None, reason))
        elif spec.needs_weights and not uri:
            where = f" (published file: {spec.url})" if spec.url else ""
            reason = (
                f"needs weights{where}: pass --weights {init}=PATH or set {WEIGHTS_ENV_PREFIX}{init.upper()}"
            )
            plan.append(PlannedRun(init, None, reason))
        else:
            plan.append(PlannedRun(init, uri if spec.needs_weights else None))
    return plan


COLUMNS: tuple[str, ...] = (
    "init",
    "recipe",
    "APbox",
    "APmask",
    "AP50",
    "AP75",
    "epochs",
    "iterations",
    "wall_time_min",
)


@dataclass(frozen=True)
class RunSummary:
    """One finished run. AP values in percent; ``curve`` is ``[(epoch, bbox/AP, segm/AP), ...]``."""

    init: str
    recipe: str
    run_dir: Path | None
    metrics: dict[str, float]
    epochs: float
    iterations: int
    wall_time_s: float
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    source: str = ""

    def row(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "init": self.init,
            "recipe": self.recipe,
            "APbox": m.get("bbox/AP"),
            "APmask": m.get("segm/AP"),
            "AP50": m.get("bbox/AP50"),
            "AP75": m.get("bbox/AP75"),
            "epochs": round(self.epochs, 2),
            "iterations": self.iterations,
            "wall_time_min": round(self.wall_time_s / 60.0, 2),
        }


def read_curve(metrics_file: Path) -> list[tuple[float, float, float]]:
    """``(epoch, bbox/AP, segm/AP)`` of every eval line in a ``metrics.jsonl`` (bad lines skipped)."""
    curve: list[tuple[float, float, float]] = []
    if not metrics_file.is_file():
        return curve
    for line in metrics_file.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "eval" and "bbox/AP" in rec:
            curve.append(
                (float(rec["epoch"]), float(rec["bbox/AP"]), float(rec.get("segm/AP", float("nan"))))
            )
    return curve


def read_run(run_dir: Path) -> RunSummary | None:
    """Summary of a finished run folder, or None when it has no readable ``eval.json``."""
    try:
        ev = json.loads(RunDir(run_dir).eval.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    curve = read_curve(RunDir(run_dir).metrics)
    return RunSummary(
        init=str(ev.get("init", run_dir.name)),
        recipe=str(ev.get("recipe", "?")),
        run_dir=run_dir,
        metrics={k: float(v) for k, v in ev.get("metrics", {}).items()},
        epochs=float(ev.get("epoch", curve[-1][0] if curve else 0.0)),
        iterations=int(ev.get("iteration", 0)),
        wall_time_s=float(ev.get("wall_time_s", 0.0)),
        curve=curve,
    )


def _order(init: str) -> tuple[int, str]:
    return (INIT_ORDER.index(init) if init in INIT_ORDER else len(INIT_ORDER), init)


def collect_runs(out_dir: Path) -> tuple[list[RunSummary], list[Path]]:
    """Finished runs under ``out_dir`` (one sub-folder per init, paper order) and unfinished folders."""
    runs: list[RunSummary] = []
    unfinished: list[Path] = []
    if not out_dir.is_dir():
        return runs, unfinished
    for sub in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        if not RunDir(sub).looks_like_run():
            continue
        summary = read_run(sub)
        if summary is None:
            unfinished.append(sub)
        else:
            runs.append(summary)
    runs.sort(key=lambda r: _order(r.init))
    return runs, unfinished


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def markdown_table(runs: list[RunSummary]) -> str:
    """The study's table as GitHub Markdown (AP in percent, one decimal)."""
    header = (
        "| init | recipe | AP<sup>box</sup> | AP<sup>mask</sup> | AP50 | AP75 | epochs | iterations "
        "| wall time (min) |"
    )
    lines = [header, "|" + "---|" * 2 + "---:|" * 7]
    for r in runs:
        row = r.row()
        cells = [row["init"], row["recipe"]] + [_fmt(row[c]) for c in ("APbox", "APmask", "AP50", "AP75")]
        cells += [f"{row['epochs']:.2f}", str(row["iterations"]), f"{row['wall_time_min']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(runs: list[RunSummary]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in runs:
        writer.writerow({k: ("" if v is None else v) for k, v in r.row().items()})
    return buf.getvalue()


def plot_curves(runs: list[RunSummary], path: Path) -> Path:
    """PNG with box AP and mask AP against epoch, one line per init (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for r in runs:
        curve = r.curve or [
            (r.epochs, r.metrics.get("bbox/AP", float("nan")), r.metrics.get("segm/AP", float("nan")))
        ]
        epochs = [c[0] for c in curve]
        axes[0].plot(epochs, [c[1] for c in curve], marker="o", label=r.init)
        axes[1].plot(epochs, [c[2] for c in curve], marker="o", label=r.init)
    for ax, title in zip(axes, ("box AP", "mask AP"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_title(f"{title} vs epoch")
        ax.grid(alpha=0.3)
        if runs:
            ax.legend()
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    csv: Path
    plot: Path
    runs: list[RunSummary]
    unfinished: list[Path]


def write_report(out_dir: Path, runs: list[RunSummary] | None = None) -> ReportFiles:
    """Write ``study.md``, ``study.csv`` and ``study_ap_vs_epoch.png`` into ``out_dir``.

    ``runs`` defaults to the finished run folders under ``out_dir``; pass the rows of
    :func:`runs_from_registry` to report a study that ran elsewhere (e.g. as Kubernetes Jobs).
    Raises ``FileNotFoundError`` when there is no finished run.
    """
    unfinished: list[Path] = []
    if runs is None:
        runs, unfinished = collect_runs(out_dir)
        if not runs:
            raise FileNotFoundError(
                f"no finished run under {out_dir}: expected sub-folders <init>/ with eval.json "
                "(written by `vitbench train` / `vitbench bench run`)"
            )
    elif not runs:
        raise FileNotFoundError("no registered run matches: nothing to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "study.md"
    atomic_write_text(md, "# Study: detection transfer by initialization\n\n" + markdown_table(runs))
    csv_path = out_dir / "study.csv"
    atomic_write_text(csv_path, csv_text(runs))
    png = plot_curves(runs, out_dir / "study_ap_vs_epoch.png")
    return ReportFiles(md, csv_path, png, runs, unfinished)


def runs_from_registry(
    client: RegistryClient, models: Sequence[str] | None = None, recipe: str | None = None
) -> list[RunSummary]:
    """One row per init from the model registry: the newest version of each init, paper order.

    ``models`` limits the search to those registered model names (default: every model);
    ``recipe`` keeps only versions tagged with that recipe. AP values come from the version's
    training run (metrics logged by the registry hook, in percent), the AP-vs-epoch curve from
    the run's metric history, the wall time from the run's start and end.
    """
    names = list(models) if models else [m.name for m in client.list_models()]
    newest: dict[str, ModelVersionInfo] = {}
    for name in names:
        for info in client.list_versions(name):
            init = info.tags.get("init")
            if not init or not info.run_id or (recipe and info.tags.get("recipe") != recipe):
                continue
            best = newest.get(init)
            if best is None or info.created_ms > best.created_ms:
                newest[init] = info
    runs: list[RunSummary] = []
    for init, info in newest.items():
        lineage = client.show(info.ref)
        run_id = str(info.run_id)
        box = client.metric_history(run_id, "bbox/AP")
        mask = dict(client.metric_history(run_id, "segm/AP"))
        epoch = dict(client.metric_history(run_id, "epoch"))
        curve = [(epoch.get(step, float("nan")), ap, mask.get(step, float("nan"))) for step, ap in box]
        start, end = lineage.start_ms, lineage.end_ms
        runs.append(
            RunSummary(
                init=init,
                recipe=info.tags.get("recipe", "?"),
                run_dir=None,
                metrics=dict(lineage.metrics or {}),
                epochs=curve[-1][0] if curve else float("nan"),
                iterations=box[-1][0] if box else 0,
                wall_time_s=(end - start) / 1000.0 if start and end else 0.0,
                curve=curve,
                source=info.ref,
            )
        )
    runs.sort(key=lambda r: _order(r.init))
    return runs
