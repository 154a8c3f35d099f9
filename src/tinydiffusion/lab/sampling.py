"""The sample page's jobs: validate a request, sample a run in a thread, stream its frames (x_t, x0_hat per step);
a ControlNet run's map comes from lab/control.py and the final event says how closely the samples follow it.

One job per client: a client's new request cancels its old job (the callback raises Cancelled at the next step).
"""
from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from pathlib import Path

import torch

from ..checkpoint import CONFIG, latest, load_meta
from ..config import load_config
from ..errors import UserError
from ..paths import make_path
from ..runs import conditioning, sample_conditional
from ..samplers import SAMPLERS
from ..timesteps import time_grid
from .control import control_request, follows
from .images import grid_url
from .params import number

MAX_N, MAX_STEPS = 64, 1000


class Cancelled(Exception):
    """Raised inside the sampler's callback to stop a job whose client asked for another."""


def parse_request(params: dict, run_dir: Path) -> dict:
    """The sampling arguments of a request, checked against the run before any sampling (UserError if bad)."""
    # config and meta only: the job loads the weights once (loading them here too doubled a ControlNet's first frame)
    cfg, meta = load_config(run_dir / CONFIG), load_meta(run_dir, latest(run_dir))
    path = make_path(cfg.diffusion.path, cfg.diffusion.T)
    n = number(params, "n", int, 16)
    if not 1 <= n <= MAX_N:
        raise UserError(f"n must be between 1 and {MAX_N} images, got {n}.")
    steps = number(params, "steps", int, cfg.sample.steps)
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"steps must be between 1 and {MAX_STEPS}, got {steps}.")
    sampler = SAMPLERS.check(str(params.get("sampler") or cfg.sample.sampler))
    time_grid(path, steps, cfg.sample.spacing, cfg.sample.shift)  # e.g. more steps than a DDPM table has
    seed = number(params, "seed", int, 0)
    guidance = number(params, "guidance", float, None)
    label = number(params, "class", int, None)
    prompt = str(params.get("prompt") or "").strip() or None
    labels = None if label is None else torch.full((n,), label)
    prompts = None if prompt is None else [prompt] * n
    conditioning(cfg, meta, labels=labels, prompts=prompts, guidance=guidance, encode=False)  # class range, text run
    return dict(n=n, steps=steps, sampler=sampler, seed=seed, guidance=guidance, labels=labels, prompts=prompts,
                **control_request(params, cfg, meta, n, guidance))  # a ControlNet run's map, scale, pictures


class Job:
    """One sampling request: its frames go into a queue as ("frame" | "done" | "error", payload) events."""

    def __init__(self, job_id: str, run_dir: Path, args: dict, previous: "Job | None"):
        self.id, self.run_dir, self.args = job_id, run_dir, args
        self.events: queue.Queue = queue.Queue()
        self.cancel = threading.Event()
        self.finished = threading.Event()
        self._previous = previous
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _callback(self, frame: dict) -> None:
        if self.cancel.is_set():
            raise Cancelled
        nrow = math.ceil(math.sqrt(len(frame["x"])))
        self.events.put(("frame", dict(i=int(frame["i"]), t=float(frame["t"]), steps=self.args["steps"],
                                       elapsed_s=time.perf_counter() - self.start,
                                       x=grid_url(frame["x"].float().cpu().clamp(-1, 1), nrow),
                                       x0_hat=grid_url(frame["x0_hat"].float().cpu().clamp(-1, 1), nrow))))

    def _work(self) -> None:
        if self._previous is not None:  # let the cancelled job stop first: one job per client on the CPU
            self._previous.finished.wait(timeout=10)
            self._previous = None
        self.start = time.perf_counter()
        a = self.args
        try:
            images, labels = sample_conditional(self.run_dir, a["n"], sampler=a["sampler"], steps=a["steps"],
                                                seed=a["seed"], labels=a["labels"], prompts=a["prompts"],
                                                guidance=a["guidance"], batch_size=a["n"], callback=self._callback,
                                                control=a.get("control"), control_scale=a.get("control_scale"),
                                                drop_control=a.get("drop_control", False))
            seconds = time.perf_counter() - self.start
            done = dict(grid=grid_url(images, math.ceil(math.sqrt(a["n"]))), seconds=seconds,
                        ms_per_image=seconds / a["n"] * 1000, n=a["n"], steps=a["steps"],
                        labels=None if labels is None else labels.tolist())
            if a.get("control") is not None:  # after the timing: the fidelity is not part of sampling
                done["fidelity"] = follows(images, a)
            self.events.put(("done", done))
        except Cancelled:
            self.events.put(("cancelled", dict(message="A newer request replaced this one.")))
        except UserError as e:
            self.events.put(("error", dict(message=str(e))))
        except Exception as e:  # the page shows one sentence; the server keeps serving
            self.events.put(("error", dict(message=f"Sampling failed: {type(e).__name__}: {e}")))
        finally:
            self.finished.set()


class Jobs:
    """The running jobs, at most one per client id."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_client: dict[str, Job] = {}
        self._by_id: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def start(self, client: str, run_dir: Path, args: dict) -> Job:
        with self._lock:
            old = self._by_client.get(client)
            if old is not None:
                old.cancel.set()
                self._by_id.pop(old.id, None)
            job = Job(f"{next(self._ids)}", run_dir, args, old)
            self._by_client[client], self._by_id[job.id] = job, job
        job.thread.start()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._by_id.get(job_id)
        if job is None:
            raise LookupError(f"No sampling job '{job_id}' (finished, replaced by a newer request, or never started).")
        return job

    def cancel_all(self) -> None:
        with self._lock:
            for job in self._by_client.values():
                job.cancel.set()
