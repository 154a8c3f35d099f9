"""The runs page's answers: the runs the lab was started with, each one's config, loss curve, samples over
training and metrics.jsonl as rows."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..checkpoint import CONFIG, latest, load_meta
from ..conditioning.control import CONTROL_MAPS
from ..config import load_config
from ..errors import UserError
from ..samplers import SAMPLERS
from ..viz.curves import loss_curve_figure, read_metrics
from .images import png_url

MAX_ROWS = 500  # metrics rows sent to the page (the last ones)


class RunList:
    """name -> run directory, for the runs given with --run (a name is the folder's name, made unique)."""

    def __init__(self, dirs: list[Path]):
        self.dirs: dict[str, Path] = {}
        for d in dirs:
            d = Path(d)
            if not (d / CONFIG).is_file():
                raise UserError(f"{d} is not a run directory (no {CONFIG}); pass folders written by "
                                "`tinydiffusion train --out DIR`.")
            name, k = d.name, 2
            while name in self.dirs:
                name, k = f"{d.name}-{k}", k + 1
            self.dirs[name] = d

    def get(self, name) -> Path:
        if name not in self.dirs:
            known = ", ".join(self.dirs) or "none (start the lab with --run DIR)"
            raise LookupError(f"Unknown run '{name}'; the lab knows: {known}.")
        return self.dirs[name]

    def summaries(self) -> list[dict]:
        return [summary(name, d) for name, d in self.dirs.items()]


def summary(name: str, run_dir: Path) -> dict:
    """What the sample page's form needs: classes, text, control maps, the run's sampler and steps."""
    cfg = load_config(run_dir / CONFIG)
    meta = load_meta(run_dir, latest(run_dir))
    return dict(name=name, dir=str(run_dir), step=meta.get("step"), model=cfg.model.name, path=cfg.diffusion.path,
                T=cfg.diffusion.T, prediction=cfg.diffusion.prediction, num_classes=int(meta.get("num_classes", 0)),
                class_names=meta.get("class_names"), text=bool(cfg.data.text), sampler=cfg.sample.sampler,
                steps=cfg.sample.steps, samplers={n: SAMPLERS.text(n) for n in SAMPLERS},
                latent=bool(meta.get("autoencoder")),
                control=dict(kind=cfg.control.kind, scale=cfg.control.scale, text=CONTROL_MAPS.text(cfg.control.kind))
                if cfg.control.base else None)


def _step_of(png: Path) -> int:
    m = re.search(r"(\d+)", png.stem)
    return int(m.group(1)) if m else 0


def details(name: str, run_dir: Path) -> dict:
    """The run's config (as JSON), its loss curve (a PNG data URL), the sample grids written during training
    (URLs) and the last MAX_ROWS rows of metrics.jsonl."""
    cfg = load_config(run_dir / CONFIG)
    out = dict(summary(name, run_dir), config=json.loads((run_dir / CONFIG).read_text()))
    try:
        rows = read_metrics(run_dir)
        out["loss_png"] = png_url(loss_curve_figure(rows, cfg, name))
    except UserError as e:
        rows, out["loss_png"], out["loss_note"] = [], None, str(e)
    out["rows"], out["total_rows"] = rows[-MAX_ROWS:], len(rows)
    pngs = sorted((run_dir / "samples").glob("*.png"), key=_step_of) if (run_dir / "samples").is_dir() else []
    out["samples"] = [dict(step=_step_of(p), url=f"/api/runfile?run={name}&file=samples/{p.name}") for p in pngs]
    return out


def run_file(run_dir: Path, rel: str) -> Path:
    """A picture inside the run (samples/*.png), never a path outside it."""
    if not re.fullmatch(r"samples/[\w.-]+\.png", rel or ""):
        raise UserError("Only the run's samples/*.png pictures can be fetched.")
    path = run_dir / rel
    if not path.is_file():
        raise LookupError(f"No {rel} in this run.")
    return path
