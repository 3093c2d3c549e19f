"""Every GPU figure of docs/benchmarks.md from one command, inside a hard time budget.

    python benchmarks/gpu_suite.py --out gpu-results            # the GPU slot (default budget 420 s)
    python benchmarks/gpu_suite.py --cpu-smoke --out /tmp/smoke  # same code paths, tiny sizes, CPU

Parts, in the order they run (each in its own process; see ``suite_parts.py``):

- ``env``            versions, GPUs, ONNX Runtime providers (what the other parts depend on)
- ``train-vitdet-b`` vitdet-b train step at 1024 px, bf16, batch 1 and the largest batch that fits
                     (vs ViTDet's 0.314 s/img on an A100)
- ``train-bench-b``  the same for bench-b (the study's architecture)
- ``train-mae``      the MAE pre-training step of ViT-B, when the code has ``vitbench.trainer.pretrain``
- ``infer``          vitdet-b inference at 1024 px, bf16, eager (vs ViTDet's 0.079 s/img)
- ``memory``         train step of vitdet-l and vitdet-b, window + 4 global vs all-global, fused and math
                     SDPA: peak memory and time ratios (vs ViTDet's ≈3.34× memory, 2.2× time for ViT-L)
- ``util``           measured bf16 GEMM rate, FLOPs per step, achieved TFLOP/s and fraction of the GEMM rate
- ``onnx``           ONNX Runtime CUDA / TensorRT latency and parity (only where those providers exist)
- ``serve``          ``vitbench serve`` at 8 clients on 1920×1080 photographs with dynamic batching and
                     without, against the bare session at batch 1 and 8 (only with the CUDA provider)
- ``ddp``            torchrun DDP smoke of the tiny preset through ``vitbench train`` (only with ≥ 2 GPUs)
- ``compile``        vitdet-b inference with the backbone under ``torch.compile``

Budget: before a part starts, the suite checks that the time left covers the part's minimum, and runs it
under a watchdog of ``min(part cap, time left)``; a part that outlives it is killed (its process group),
keeping the rows it had recorded. A part whose dependency is missing is skipped with the reason; a part
that fails records its error and the others still run. Output: ``results.json``, ``results.md`` and
``log.txt`` in ``--out``; progress is printed as it goes, the Markdown table last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESERVE_S = 5.0  # kept back for writing the report


@dataclass(frozen=True)
class PartSpec:
    """How long a part may take (``cap``) and needs at least (``need``), in seconds, per mode."""

    name: str
    title: str
    cap_gpu: float
    need_gpu: float
    cap_cpu: float = 300.0
    need_cpu: float = 5.0


PARTS: tuple[PartSpec, ...] = (
    PartSpec("env", "environment", 60, 5),
    PartSpec("train-vitdet-b", "1. train step, vitdet-b", 110, 30),
    PartSpec("train-bench-b", "1. train step, bench-b", 90, 30),
    PartSpec("train-mae", "1. MAE pre-training step, ViT-B", 60, 20),
    PartSpec("infer", "2. inference, vitdet-b, eager", 45, 15),
    PartSpec("memory", "3. window vs global attention", 130, 40),
    PartSpec("util", "4. utilization", 50, 20),
    PartSpec("onnx", "5. ONNX Runtime CUDA / TensorRT", 150, 60),
    PartSpec("serve", "7. service batching gain, ONNX Runtime CUDA", 200, 100),
    PartSpec("ddp", "6. DDP smoke (torchrun, vitbench train)", 120, 40),
    PartSpec("compile", "2. inference, vitdet-b, torch.compile", 180, 60),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Log:
    """Prints progress (flushed) and keeps a copy in ``log.txt``."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            print(line, flush=True)
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _precheck(spec: PartSpec, env: dict[str, Any], cpu_smoke: bool) -> str | None:
    """A reason to skip ``spec`` without starting it, from the facts the ``env`` part found."""
    if spec.name == "env" or not env:
        return None
    if spec.name == "train-mae" and not env.get("pretrain_module"):
        return "no pre-training module in this checkout (vitbench.trainer.pretrain does not exist)"
    if cpu_smoke:
        return None
    if not env.get("cuda_available"):
        return f"no CUDA device visible to torch {env.get('torch')}"
    if spec.name == "ddp" and env.get("gpu_count", 0) < 2:
        return f"DDP needs at least 2 GPUs; {env.get('gpu_count', 0)} visible"
    providers = env.get("onnxruntime_providers") or []
    if spec.name == "onnx" and not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(providers):
        return (
            f"onnxruntime {env.get('onnxruntime')} has neither CUDAExecutionProvider nor "
            f"TensorrtExecutionProvider (available: {', '.join(providers) or 'none'})"
        )
    if spec.name == "serve" and "CUDAExecutionProvider" not in providers:
        return (
            f"onnxruntime {env.get('onnxruntime')} has no CUDAExecutionProvider "
            f"(available: {', '.join(providers) or 'none'})"
        )
    return None


def part_command(spec: PartSpec, args: argparse.Namespace, deadline: float, part_file: Path) -> list[str]:
    """The child command line that runs ``spec`` alone and writes its result to ``part_file``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", spec.name, "--part-file", str(part_file)]
    cmd += ["--deadline", f"{deadline:.3f}"]
    if args.cpu_smoke:
        cmd.append("--cpu-smoke")
    if args.max_batch:
        cmd += ["--max-batch", str(args.max_batch)]
    return cmd


def run_watched(name: str, cmd: list[str], timeout: float, part_file: Path, log: Log) -> dict[str, Any]:
    """Run ``cmd`` (one part) in its own process group under a watchdog, streaming its output to ``log``.

    After ``timeout`` seconds the whole group (torchrun's workers too) gets SIGTERM, then SIGKILL. The
    result is what the part wrote to ``part_file`` (rows recorded before a kill are kept), with
    ``status`` set to ``timeout`` or ``failed`` when the process was killed or died.
    """
    pythonpath = [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p)}
    start = time.time()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=env,
        cwd=ROOT,
        start_new_session=True,  # its own process group: the watchdog kills torchrun's children too
    )
    assert proc.stdout is not None
    stream = proc.stdout

    def pump() -> None:
        for line in stream:
            log(f"[{name}] {line.rstrip()}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        killed = True
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the part's own process
    reader.join(timeout=5)
    wall = time.time() - start
    result: dict[str, Any] = {"part": name, "rows": [], "notes": []}
    if part_file.exists():
        try:
            result = json.loads(part_file.read_text())
        except json.JSONDecodeError as exc:
            result["error"] = f"unreadable part file: {exc}"
    if killed:
        result["status"] = "timeout"
        result["reason"] = (
            f"killed by the watchdog after {timeout:.0f} s (its budget); "
            f"{len(result.get('rows', []))} row(s) measured before that are kept"
        )
    elif proc.returncode != 0 or result.get("status") in (None, "running"):
        result["status"] = "failed"
        result["reason"] = result.get("reason") or f"the part's process exited with code {proc.returncode}"
    result["wall_s"] = round(wall, 2)
    return result


def _fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, ``|`` escaped."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value).replace("|", "\\|").replace("\n", " ")


DETAIL_KEYS = (
    "batch",
    "peak_mem_gib",
    "saved_act_gib",
    "images_per_s",
    "fraction_of_gemm",
    "gflop_per_step",
    "step_s",
    "eager_s_per_img",
    "speedup_vs_eager",
    "ratio_to_eager",
    "min_box_iou",
    "max_score_diff",
    "mean_batch",
    "p50_ms",
    "p99_ms",
    "errors",
    "speedup_vs_batch1",
    "service_to_bare_batch",
    "bare_gain",
    "search",
)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: environment line, one table of every figure, then skipped/failed parts."""
    env = report.get("environment", {})
    gpus = ", ".join(env.get("gpus", [])) or "no GPU"
    lines = [
        f"# vitbench GPU suite — {report['mode']}",
        "",
        f"{report['started']} → {report['finished']}, {report['wall_s']:.0f} s of a "
        f"{report['budget_s']:.0f} s budget. Machine: {gpus}; torch {env.get('torch')}, "
        f"torchvision {env.get('torchvision')}, CUDA "
        f"{env.get('cuda_runtime')}, Python {env.get('python')}, onnxruntime {env.get('onnxruntime')} "
        f"({', '.join(env.get('onnxruntime_providers', []))}); commit {env.get('git_commit')}.",
        "",
        "| part | measurement | value | unit | reference | value ÷ reference | details |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for part in report["parts"]:
        for row in part.get("rows", []):
            ref = row.get("reference")
            ratio = row["value"] / ref if ref and row.get("value") is not None else None
            details = "; ".join(
                _fmt(row[k]) if k == "search" else f"{k} {_fmt(row[k])}"
                for k in DETAIL_KEYS
                if row.get(k) is not None
            )
            ref_text = f"{_fmt(ref)} ({row.get('reference_source', '')})" if ref is not None else ""
            lines.append(
                f"| {part['name']} | {row['measurement']} | {_fmt(row.get('value'))} | {row['unit']} | "
                f"{ref_text} | {_fmt(ratio) if ratio is not None else ''} | {details} |"
            )
    lines += ["", "| part | status | wall s | reason / notes |", "|---|---|---:|---|"]
    for part in report["parts"]:
        text = _fmt("; ".join([part.get("reason") or "", *part.get("notes", [])]).strip("; "))
        lines.append(f"| {part['name']} | {part['status']} | {_fmt(part.get('wall_s'))} | {text} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected parts in order within ``args.budget_s``; write and return the report."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    log = Log(out / "log.txt")
    t_start = time.time()
    deadline = t_start + args.budget_s
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    selected = [p for p in PARTS if p.name == "env" or not args.parts or p.name in args.parts]
    report: dict[str, Any] = {
        "suite": "vitbench gpu_suite",
        "schema": 1,
        "mode": mode,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "budget_s": args.budget_s,
        "started": _now(),
        "environment": {},
        "parts": [],
    }
    names = ", ".join(p.name for p in selected)
    log(f"vitbench GPU suite ({mode}), budget {args.budget_s:.0f} s, parts: {names}")
    for spec in selected:
        left = deadline - time.time() - RESERVE_S
        cap, need = (spec.cap_cpu, spec.need_cpu) if args.cpu_smoke else (spec.cap_gpu, spec.need_gpu)
        reason = _precheck(spec, report["environment"], args.cpu_smoke)
        if reason is None and left < need:
            reason = f"budget: {left:.0f} s left, the part needs at least {need:.0f} s"
        if reason is not None:
            log(f"== {spec.name}: skipped — {reason}")
            result = {"part": spec.name, "status": "skipped", "reason": reason, "rows": [], "notes": []}
        else:
            timeout = min(cap, left)
            log(f"== {spec.name} ({spec.title}): up to {timeout:.0f} s, {left:.0f} s of the budget left")
            part_file = parts_dir / f"{spec.name}.json"
            cmd = part_command(spec, args, time.time() + timeout, part_file)
            result = run_watched(spec.name, cmd, timeout, part_file, log)
            log(f"== {spec.name}: {result['status']} in {result['wall_s']:.1f} s")
        result["name"], result["title"] = spec.name, spec.title
        if spec.name == "env":
            report["environment"] = result.pop("env", {})
        report["parts"].append(result)
        _write_atomic(out / "results.json", json.dumps(report, indent=2, default=str) + "\n")
    report["finished"] = _now()
    report["wall_s"] = round(time.time() - t_start, 1)
    _write_atomic(out / "results.json", json.dumps(report, indent=2, default=str) + "\n")
    markdown = render_markdown(report)
    _write_atomic(out / "results.md", markdown)
    for f in parts_dir.glob("*.json"):  # merged into results.json; few files come back from a GPU slot
        f.unlink()
    parts_dir.rmdir()
    log("")
    log(markdown)
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} in {report['wall_s']:.0f} s")
    log.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu-suite-results"), help="output folder")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="hard time budget in seconds (default 420; 600 with --cpu-smoke)",
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="same code paths at tiny sizes on the CPU")
    parser.add_argument(
        "--parts",
        default="",
        help="comma-separated subset of parts (env always runs): " + ", ".join(p.name for p in PARTS),
    )
    parser.add_argument(
        "--max-batch", type=int, default=0, help="largest batch the train search tries (default 64)"
    )
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--part-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.part:  # child: one part in this process
        import dataclasses

        from suite_parts import CPU_SMOKE, GPU, run_part

        mode = CPU_SMOKE if args.cpu_smoke else GPU
        if args.max_batch:
            mode = dataclasses.replace(mode, max_batch=args.max_batch)
        return run_part(args.part, mode, args.deadline, args.part_file)

    names = {p.name for p in PARTS}
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - names)
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected some of {', '.join(p.name for p in PARTS)}")
    if args.budget_s is None:
        args.budget_s = 600.0 if args.cpu_smoke else 420.0
    if args.budget_s <= RESERVE_S:
        parser.error(f"--budget-s must be more than {RESERVE_S:.0f} seconds")
    report = run_suite(args)
    failed = [p["name"] for p in report["parts"] if p["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
