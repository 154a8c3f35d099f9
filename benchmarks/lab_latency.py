"""The lab's latency: seconds from "Sample" (the POST) to the first streamed frame and to the final grid.

    .venv/bin/python benchmarks/lab_latency.py --run RUN_DIR [--n 64] [--steps S] [--repeats 5]

Run it alone on the machine (RUN_DIR from `tinydiffusion train --preset mnist --out RUN_DIR`); it starts the lab
in-process on a free port and reads the event stream as the page does. Targets (issue 24): first frame < 0.3 s,
64 images in about the time `tinydiffusion sample` takes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path

from tinydiffusion.lab.server import Lab, make_server


def one(base: str, body: dict) -> tuple[float, float, int]:
    """(seconds to the first frame, seconds to the final grid, frames) for one sampling request."""
    start = time.perf_counter()
    req = urllib.request.Request(f"{base}/api/sample", json.dumps(body).encode(), {"Content-Type": "application/json"})
    job = json.loads(urllib.request.urlopen(req).read())["job"]
    first, frames, kind = None, 0, None
    with urllib.request.urlopen(f"{base}/api/events?job={job}", timeout=600) as r:
        for line in r:
            line = line.decode()
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: "):
                if kind == "frame":
                    frames += 1
                    first = first or time.perf_counter() - start
                else:
                    if kind != "done":
                        raise SystemExit(f"the job ended with {kind}: {line[6:]}")
                    return first, time.perf_counter() - start, frames
    raise SystemExit("the stream ended without a final grid")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's)")
    p.add_argument("--sampler", help="sampler (default: the run's)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    server = make_server(Lab([a.run]), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    body = dict(run=a.run.name, n=a.n, steps=a.steps, sampler=a.sampler, client="bench")
    one(base, body)  # warm-up: imports, first load of the run
    rows = [one(base, body) for _ in range(a.repeats)]
    firsts, totals = [r[0] for r in rows], [r[1] for r in rows]
    print(f"{a.run}: n = {a.n}, {rows[0][2]} steps, {a.repeats} repeats (median, min-max)")
    print(f"  first frame {statistics.median(firsts):.3f} s ({min(firsts):.3f}-{max(firsts):.3f})")
    print(f"  final grid  {statistics.median(totals):.3f} s ({min(totals):.3f}-{max(totals):.3f}), "
          f"{statistics.median(totals) / a.n * 1000:.1f} ms/image")
    server.shutdown()


if __name__ == "__main__":
    main()
