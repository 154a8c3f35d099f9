"""Report folders: report.md (markdown tables and pictures) and results.json, written atomically."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from ..io import write_text
from ..device import native_bf16


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu=cpu, bf16_units=native_bf16("cpu"), threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)


def describe(info: dict) -> str:
    """One line for a report: 'CPU model (bf16 units | no bf16 units), N threads, torch V'."""
    units = "bf16 units" if info.get("bf16_units") else "no bf16 units"
    return f"{info['cpu']} ({units}), {info['threads']} threads, torch {info['torch']}"


def table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4g") -> str:
    """A markdown table of dict rows."""
    columns = columns or list(rows[0]) if rows else []
    fmt = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(folder: Path, title: str, body: str, results: dict) -> Path:
    """folder/report.md (title, body, machine) and folder/results.json (results + machine)."""
    folder = Path(folder)
    info = machine()
    md = f"# {title}\n\n{body.strip()}\n\n---\nMachine: {describe(info)}" \
         + (f", GPU {info['gpu']}" if info["gpu"] else "") + "\n"
    write_text(folder / "report.md", md)
    write_text(folder / "results.json", json.dumps({**results, "machine": info}, indent=2, default=float))
    return folder
