"""Settings from the environment, and provider selection."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from vitbench.service.backends import select_providers
from vitbench.service.settings import ServiceSettings


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITBENCH_MODEL", "coco-vitdet@champion")
    monkeypatch.setenv("VITBENCH_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("VITBENCH_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("VITBENCH_API_KEY", "s3cr3t-key")
    monkeypatch.setenv("VITBENCH_HOME", "/data/vitbench")
    assert ServiceSettings().intra_op_spinning is False  # ORT threads sleep between runs by default
    monkeypatch.setenv("VITBENCH_INTRA_OP_SPINNING", "1")
    settings = ServiceSettings()
    assert settings.intra_op_spinning is True
    assert settings.model == "coco-vitdet@champion"
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.max_batch_size == 8
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cr3t-key"
    assert "s3cr3t-key" not in repr(settings)  # the key never shows in logs
    assert settings.serving_cache == Path("/data/vitbench/serving")


def test_defaults_prefer_tensorrt_then_cuda_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITBENCH_PROVIDERS", raising=False)
    assert ServiceSettings().providers == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"providers": "CudaProvider"}, "unknown execution provider"),
        ({"providers": ""}, "at least one execution provider"),
        ({"max_batch_size": 0}, "greater than or equal to 1"),
        ({"score_threshold": 2}, "less than or equal to 1"),
        ({"model": "a@b", "model_dir": "/x"}, "either model"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"stream_intra_op_threads": -2}, "stream_intra_op_threads"),
    ],
)
def test_bad_settings_name_the_field(values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ServiceSettings(**values)


CPU = ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("cores", "values", "providers", "threads"),
    [
        (2, {}, CPU, 1),  # two streams share two cores: one thread per run
        (8, {}, CPU, 4),
        (8, {"inference_streams": 4}, CPU, 2),
        (8, {"stream_intra_op_threads": 3}, CPU, 3),
        (2, {"inference_streams": 1}, CPU, None),  # one run at a time: it may take every core
        (2, {"stream_intra_op_threads": 0}, CPU, None),  # turned off
        (2, {}, ["CUDAExecutionProvider", "CPUExecutionProvider"], None),  # threads do not matter on a GPU
        (8, {"intra_op_threads": 2}, CPU, None),  # lone requests already run on no more threads than that
        (1, {}, CPU, None),
    ],
)
def test_queued_batches_get_a_session_with_fewer_threads_on_a_cpu(
    monkeypatch: pytest.MonkeyPatch, cores: int, values: dict, providers: list[str], threads: int | None
) -> None:
    monkeypatch.setattr("vitbench.service.settings.available_cores", lambda: cores)
    monkeypatch.setattr("vitbench.service.settings.limited_cores", lambda: None)
    assert ServiceSettings(**values).stream_threads(providers) == threads


def test_a_container_s_cpu_limit_sizes_the_sessions_and_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod limited to 4 of a node's 64 cores: the lone-request session gets 4 intra-op threads (not
    ORT's one per node core), the stream session 2, each stage pool 4; unlimited: ORT's default."""
    monkeypatch.setattr("vitbench.service.settings.available_cores", lambda: 4)
    monkeypatch.setattr("vitbench.service.settings.limited_cores", lambda: 4)
    limited = ServiceSettings()
    assert (limited.session_threads, limited.stream_threads(CPU), limited.stage_threads) == (4, 2, 4)
    assert ServiceSettings(intra_op_threads=3).session_threads == 3  # an explicit setting wins
    monkeypatch.setattr("vitbench.service.settings.limited_cores", lambda: None)
    assert ServiceSettings().session_threads == 0


def test_select_providers_keeps_order_and_falls_back_to_cpu() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    preferred = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(preferred, available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(["TensorrtExecutionProvider"], ["CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]


def test_service_is_torch_free() -> None:
    """The service image has no torch: building the app and serving must not import it (or mlflow)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vitbench.service.app import create_app\n"
        "from vitbench.service.settings import ServiceSettings\n"
        "import vitbench.cli.serve_cmd\n"
        "create_app(ServiceSettings(model='m@champion'))\n"
        "heavy = {'torch', 'torchvision', 'mlflow'}\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in heavy or m.startswith('vitbench.trainer'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
