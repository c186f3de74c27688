"""What every timing in BENCHMARKS.md names: the CPU (lscpu model name and the flags that change
kernel choice), the cores and the load average before and after."""

from __future__ import annotations

import os
import subprocess

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")


def cpu_info() -> dict:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {
        "cpu": fields.get("Model name", "?").strip(),
        "cores": os.cpu_count(),
        "flags": [f for f in FLAGS if f in flags],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
