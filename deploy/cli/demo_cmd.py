"""``vitbench demo``: the study end to end on a CPU in a few minutes.

Synthesizes a small COCO-format dataset, trains the tiny preset from random init (plus every init
whose weights are given with ``--weights INIT=URI`` or ``VITBENCH_WEIGHTS_<INIT>``), evaluates box
and mask AP on the synthetic val split, and prints the study's table and the plot's path.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import typer

from deploy.cli.common import HOME_HELP, fail

DEMO_MARKER = ".vitbench-demo"

# Demo schedule for the 128-px tiny preset on 2 CPU cores (see docs/benchmarks.md, "Training"): a higher
# lr and lighter RoI heads (2 convs each, 32 RoIs per image) so that random init learns in 1000 steps.
DEMO_OVERRIDES: tuple[str, ...] = (
    "solver.max_iters=1000",
    "solver.lr=8e-4",
    "solver.warmup_iters=25",
    "solver.batch_size=4",
    "solver.checkpoint_period=250",
    "solver.eval_period=250",
    "heads.roi_batch_size_per_image=32",
    "heads.box_convs=2",
    "heads.mask_convs=2",
    "data.num_workers=1",
)
# The demo's data: 3 shape categories, up to 3 larger objects per 96-128 px image (textures, occlusion
# and crowd regions as in the default generator).
DEMO_SYNTH = {"num_categories": 3, "max_objects": 3, "min_object_size": 28, "max_object_size": 64}


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path(".vitbench/demo"), "--out", help="Demo folder (data/ and study/)."),
        recipe: str = typer.Option("bench-tiny", "--recipe", help="Recipe to train (a CPU preset)."),
        images: int = typer.Option(400, "--images", min=10, help="Synthetic images in total (80% train)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
        inits: str = typer.Option(
            "random,supervised,mocov3,beit,mae",
            "--inits",
            help="Inits to try; those without weights are skipped (random needs none).",
        ),
        weights: list[str] = typer.Option([], "--weights", help="INIT=URI weights (repeatable)."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Extra recipe overrides key=value, applied after the demo's schedule."
        ),
        do_register: bool = typer.Option(
            False, "--register/--no-register", help="Also log the runs and register the models."
        ),
        home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
        threads: int = typer.Option(
            0,
            "--threads",
            min=0,
            help="torch CPU threads (0: half the cores, the rest feed the data loader).",
        ),
    ) -> None:
        """Synthesize data, train the tiny preset per init, evaluate, print the table and the plot path."""
        import torch
        from rich.console import Console

        from deploy.cli.bench_local import parse_weights, print_report, run_study
        from trainer.data.synth import SynthConfig, generate_dataset

        torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))

        console = Console(stderr=True, highlight=False)
        if out.exists():
            if not (out / DEMO_MARKER).exists():
                fail(f"{out} exists and was not made by `vitbench demo`; choose another --out")
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / DEMO_MARKER).write_text("made by vitbench demo; removed by the next demo run\n")
        t0 = time.perf_counter()
        data = out / "data"
        with console.status(f"synthesizing {images} images"):
            counts = generate_dataset(data, images, seed, SynthConfig(**DEMO_SYNTH))
        console.print(f"data: {counts['train']} train / {counts['val']} val images in {data}")
        names = [s.strip() for s in inits.split(",") if s.strip()]
        study = out / "study"
        _, failed = run_study(
            inits=names,
            recipe=recipe,
            data=data,
            out=study,
            weights=parse_weights(weights),
            overrides=[*DEMO_OVERRIDES, *overrides],
            register=do_register,
            home=home,
            device="cpu",
        )
        print_report(study)
        console.print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min")
        if failed:
            raise typer.Exit(1)
