"""The GPU suite (benchmarks/gpu_suite.py) stays runnable: its CPU smoke measures every part that can run
on a CPU through the same code paths as on the GPU, its watchdog and budget hold, and its FLOP count
agrees with torch's own counter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_suite  # noqa: E402

#: parts that run on a CPU in the smoke; the others need CUDA, a pre-training module or ≥ 2 GPUs
CPU_PARTS = ("train-vitdet-b", "train-bench-b", "infer", "memory", "util", "onnx", "serve", "ddp", "compile")


def _suite(out: Path, *extra: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(BENCH / "gpu_suite.py"), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("smoke")
    return _suite(out, "--cpu-smoke", "--budget-s", "1100"), out


@pytest.mark.timeout(1500)  # the smoke takes ~2 min on a quiet 2-core VM, up to ~6 under heavy load
def test_cpu_smoke_measures_every_cpu_part(smoke: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["mode"] == "cpu-smoke"
    assert report["environment"]["torch"]
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == [p.name for p in gpu_suite.PARTS]
    for name, part in parts.items():
        assert part["status"] in ("measured", "skipped"), (name, part.get("reason"), part.get("error"))
        if part["status"] == "skipped":
            assert part["reason"], name
    for name in CPU_PARTS:
        part = parts[name]
        assert part["status"] == "measured", (name, part.get("reason"), part.get("error"))
        assert part["rows"], name
        for row in part["rows"]:
            assert isinstance(row["value"], (int, float)) and row["value"] > 0, (name, row)
    mae = parts["train-mae"]
    if not report["environment"]["pretrain_module"]:
        assert mae["status"] == "skipped" and "pre-training module" in mae["reason"]
    # the parts files are merged into results.json and removed: few files come back from a GPU slot
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.json", "results.md"]
    assert "== compile" in (out / "log.txt").read_text()  # progress is logged as it goes


@pytest.mark.timeout(1500)
def test_cpu_smoke_figures_are_consistent(smoke: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = smoke
    report = json.loads((out / "results.json").read_text())
    rows = {r["measurement"]: r for p in report["parts"] for r in p["rows"]}
    counted = next(r for m, r in rows.items() if "counted ÷ analytic" in m)
    assert 0.99 <= counted["value"] <= 1.05  # norms/rel-pos are the only terms the analytic count leaves out
    parity = next(r for m, r in rows.items() if "parity" in m)
    assert parity["passed"] and parity["value"] == float(parity["unit"].split()[-1])
    largest = next(r for m, r in rows.items() if "vitdet-tiny train step, largest batch" in m)
    assert largest["batch"] == 2 and largest["step_s"] == pytest.approx(largest["value"] * 2)
    served = {r["batch"]: r for m, r in rows.items() if m.startswith("vitdet-tiny service, 2 clients")}
    assert sorted(served) == [1, 2] and all(r["errors"] == 0 for r in served.values())
    assert served[1]["mean_batch"] == 1.0  # batching off: every batch holds one request
    assert 1.0 <= served[2]["mean_batch"] <= 2.0
    gain = next(r for m, r in rows.items() if m.startswith("vitdet-tiny service batching gain"))
    assert gain["value"] == pytest.approx(served[2]["value"] / served[1]["value"])
    bare = {r.get("batch", 1): r["value"] for m, r in rows.items() if "bare session, batch" in m}
    assert gain["bare_gain"] == pytest.approx(bare[2] / bare[1])
    ddp = next(r for m, r in rows.items() if m.startswith("DDP smoke"))
    assert ddp["ranks"] == 2 and ddp["final_checkpoint"] is True
    markdown = (out / "results.md").read_text()
    for measurement in rows:
        assert measurement.replace("|", "\\|") in markdown
    assert "| train-mae | skipped |" in markdown or "| train-mae | measured |" in markdown


def test_budget_skips_parts_with_a_reason(tmp_path: Path) -> None:
    proc = _suite(tmp_path, "--budget-s", "6", timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert [p["status"] for p in report["parts"]] == ["skipped"] * len(gpu_suite.PARTS)
    assert all(p["reason"].startswith("budget:") for p in report["parts"])
    assert "| env | skipped |" in (tmp_path / "results.md").read_text()


def test_gpu_mode_without_cuda_skips_every_gpu_part_with_the_reason(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU parts would run")
    proc = _suite(tmp_path, "--budget-s", "300", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:]
    parts = {p["name"]: p for p in json.loads((tmp_path / "results.json").read_text())["parts"]}
    assert parts.pop("env")["status"] == "measured"
    assert parts.pop("train-mae")["status"] == "skipped"
    for name, part in parts.items():
        assert part["status"] == "skipped" and part["reason"].startswith("no CUDA device visible"), name
    # a part started anyway (e.g. after a failed env probe) checks for itself
    part_file = tmp_path / "infer.json"
    cmd = [sys.executable, str(BENCH / "gpu_suite.py"), "--part", "infer", "--part-file", str(part_file)]
    cmd += ["--deadline", str(time.time() + 300)]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    result = json.loads(part_file.read_text())
    assert result["status"] == "skipped" and "torch.cuda.is_available() is False" in result["reason"]


def test_unknown_part_is_a_usage_error(tmp_path: Path) -> None:
    proc = _suite(tmp_path, "--parts", "train,nope", timeout=60)
    assert proc.returncode == 2
    assert "unknown part(s) ['nope', 'train']" in proc.stderr


def test_watchdog_kills_a_hung_part_and_its_children_keeping_its_rows(tmp_path: Path) -> None:
    part_file = tmp_path / "hang.json"
    pid_file = tmp_path / "child.pid"
    script = (
        "import json, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        f"json.dump({{'part': 'hang', 'status': 'running', 'rows': [{{'measurement': 'm', 'value': 1.0, "
        f"'unit': 's'}}], 'notes': []}}, open({str(part_file)!r}, 'w'))\n"
        "print('measured one row', flush=True)\n"
        "time.sleep(120)\n"
    )
    log = gpu_suite.Log(tmp_path / "log.txt")
    start = time.time()
    result = gpu_suite.run_watched("hang", [sys.executable, "-c", script], 3.0, part_file, log)
    log.close()
    assert time.time() - start < 30
    assert result["status"] == "timeout" and "watchdog" in result["reason"]
    assert result["rows"] == [{"measurement": "m", "value": 1.0, "unit": "s"}]
    assert "[hang] measured one row" in (tmp_path / "log.txt").read_text()
    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the part's child process outlived the watchdog"


def test_crashed_part_is_failed_with_its_output(tmp_path: Path) -> None:
    log = gpu_suite.Log(tmp_path / "log.txt")
    cmd = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
    result = gpu_suite.run_watched("crash", cmd, 30.0, tmp_path / "none.json", log)
    log.close()
    assert result["status"] == "failed" and "code 3" in result["reason"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting to be reaped is dead
        return fh.read().split()[2] != "Z"


@pytest.mark.parametrize(
    ("env", "part", "expected"),
    [
        ({"cuda_available": False, "torch": "2.11.0"}, "infer", "no CUDA device visible to torch 2.11.0"),
        ({"cuda_available": True, "gpu_count": 1}, "ddp", "DDP needs at least 2 GPUs; 1 visible"),
        (
            {
                "cuda_available": True,
                "onnxruntime": "1.30.0",
                "onnxruntime_providers": ["CPUExecutionProvider"],
            },
            "onnx",
            "onnxruntime 1.30.0 has neither CUDAExecutionProvider nor TensorrtExecutionProvider",
        ),
        ({"cuda_available": True, "pretrain_module": False}, "train-mae", "no pre-training module"),
        ({"cuda_available": True, "gpu_count": 2}, "ddp", None),
        ({"cuda_available": True, "onnxruntime_providers": ["CUDAExecutionProvider"]}, "onnx", None),
        (
            {
                "cuda_available": True,
                "onnxruntime": "1.30.0",
                "onnxruntime_providers": ["CPUExecutionProvider"],
            },
            "serve",
            "onnxruntime 1.30.0 has no CUDAExecutionProvider",
        ),
        (
            {"cuda_available": True, "onnxruntime_providers": ["TensorrtExecutionProvider"]},
            "serve",
            "onnxruntime",
        ),
        ({"cuda_available": True, "onnxruntime_providers": ["CUDAExecutionProvider"]}, "serve", None),
    ],
)
def test_gpu_prechecks_name_the_missing_dependency(
    env: dict[str, Any], part: str, expected: str | None
) -> None:
    spec = next(p for p in gpu_suite.PARTS if p.name == part)
    reason = gpu_suite._precheck(spec, {"pretrain_module": True, **env}, cpu_smoke=False)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected)


@pytest.mark.parametrize(
    ("window", "global_blocks", "size"),
    [(4, (1, 3), 128), (0, (0, 1, 2, 3), 128), (4, (1,), 160), (14, (2,), 224)],  # 160 px: 10 pads to 12
)
def test_analytic_vit_flops_match_torch_flop_counter(
    window: int, global_blocks: tuple[int, ...], size: int
) -> None:
    import torch
    from benchlib import sdpa_backend, vit_flops
    from torch.utils.flop_counter import FlopCounterMode

    from vitbench.trainer.models.detector import build_vit
    from vitbench.trainer.recipes import BackboneConfig, InputConfig, NeckConfig, Recipe

    bb = BackboneConfig(
        embed_dim=48, depth=4, num_heads=3, window_size=window, global_blocks=global_blocks, rel_pos="none"
    )
    recipe = Recipe(
        name="flops", backbone=bb, neck=NeckConfig(kind="simple_fpn"), input=InputConfig(image_size=size)
    )
    vit = build_vit(recipe)  # a simple pyramid taps the last block only
    with torch.no_grad(), sdpa_backend(True), FlopCounterMode(display=False) as counter:
        vit(torch.randn(1, 3, size, size))
    assert counter.get_total_flops() == vit_flops(bb, size)


def test_saved_activation_count_sees_the_attention_matrix() -> None:
    import torch
    from benchlib import count_saved_activations, sdpa_backend

    q = torch.randn(1, 2, 64, 8, requires_grad=True)
    with sdpa_backend(True), count_saved_activations() as saved:
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    out.sum().backward()
    # the math backend keeps the (1, 2, 64, 64) softmax output for backward: at least its 32 KiB
    assert saved["bytes"] >= 2 * 64 * 64 * 4
    with count_saved_activations() as none_saved, torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert none_saved["bytes"] == 0


def test_mae_part_times_the_real_mae_step(tmp_path: Path) -> None:
    import suite_parts

    ctx = suite_parts.PartContext(
        "train-mae", suite_parts.CPU_SMOKE, time.time() + 120, tmp_path / "mae.json"
    )
    suite_parts.part_train_mae(ctx)
    row, ratio = json.loads((tmp_path / "mae.json").read_text())["rows"]
    assert row["unit"] == "img/s" and row["value"] > 0
    assert "mae-tiny" in row["measurement"] and "mask 0.75" in row["measurement"]
    # the same step with the encoder on 99 % of the patches, as a ratio of step times
    assert ratio["unit"] == "×" and ratio["value"] == ratio["step_s_full"] / row["step_s"]
