"""Export a registered model version (the use case behind ``vitbench export`` and the demo).

Download the version's checkpoint, export it (ONNX or TensorRT), prove parity with eager PyTorch,
and attach the files + ``manifest.json`` to the same version. A failed parity check attaches nothing
and raises :class:`ParityFailedError` (its ``outcome`` holds the report).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from vitbench.registry.client import ModelVersionInfo, RegistryClient
from vitbench.registry.manifest import MANIFEST_FILE, ParityReport
from vitbench.trainer.export.pipeline import ExportOutcome, Format, export_checkpoint


class ParityFailedError(RuntimeError):
    """The exported model does not match eager PyTorch; nothing was attached to the version."""

    def __init__(self, version: ModelVersionInfo, outcome: ExportOutcome, report_file: Path | None) -> None:
        bad = [im.image for im in outcome.parity.images if not im.passed]
        super().__init__(
            f"parity check failed for {version.ref} on {', '.join(bad)} ({outcome.parity.runtime}); "
            "nothing was attached"
        )
        self.version = version
        self.outcome = outcome
        self.report_file = report_file


@dataclass(frozen=True)
class RegisteredExport:
    """What was exported: the version, the outcome (files + manifest), whether it was attached, and the
    folder that keeps the files (None when they lived in a temporary folder only)."""

    version: ModelVersionInfo
    outcome: ExportOutcome
    attached: bool
    kept_in: Path | None

    @property
    def parity(self) -> ParityReport:
        return self.outcome.parity


def export_registered(
    client: RegistryClient,
    ref: str,
    fmt: Format = "onnx",
    *,
    out: Path | None = None,
    parity_images: int = 4,
    upload: bool = True,
) -> RegisteredExport:
    """Export version ``ref`` (``name@alias`` or ``name/version``) and attach the result to it.

    ``out`` also keeps the exported files and ``manifest.json`` there (on a parity failure, the manifest
    with the report). Raises ``RegistryError`` (version, download), ``ExportError`` (export) or
    :class:`ParityFailedError`.
    """
    with tempfile.TemporaryDirectory(prefix="vitbench-export-") as tmp:
        work = Path(tmp)
        download = client.download(ref, work / "checkpoint")
        info = download.version
        target = out if out is not None else work / "export"
        outcome = export_checkpoint(
            download.path,
            target,
            fmt,
            parity_count=parity_images,
            model_name=info.name,
            model_version=info.version,
        )
        if not outcome.parity.passed:
            report_file = outcome.manifest.save(target / MANIFEST_FILE) if out is not None else None
            raise ParityFailedError(info, outcome, report_file)
        if out is not None:
            outcome.manifest.save(out / MANIFEST_FILE)
        if upload:
            client.attach_export(info, list(outcome.files), outcome.manifest, fmt)
        return RegisteredExport(info, outcome, upload, out)
