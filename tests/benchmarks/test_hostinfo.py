"""The CPU a benchmark ran on, as its results name it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from hostinfo import cpu_description

_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx avx2 fma

processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx avx2 fma
"""

_XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: avx avx2 avx512f avx512bw amx_tile
"""

_ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve
"""


def test_names_the_model_and_the_widest_vector_instructions() -> None:
    cpus = f"{os.cpu_count()} CPUs"
    assert cpu_description(_EPYC) == f"AMD EPYC, avx2, {cpus}"
    assert cpu_description(_XEON) == f"Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz, avx512f, {cpus}"
    assert cpu_description(_ARM).endswith(f", sve, {cpus}")


def test_reads_this_machine() -> None:
    description = cpu_description()
    assert description.endswith(f"{os.cpu_count()} CPUs")
    assert len(description.split(", ")) >= 2
