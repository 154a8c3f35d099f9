"""`tinydiffusion lab`: the local web page (forward process, live sampling, runs, the course report)."""
from __future__ import annotations

from pathlib import Path


def add_lab(sub):
    p = sub.add_parser("lab", help="open the lab: a local web page with the course's widgets and live sampling")
    p.add_argument("--run", type=Path, action="append", default=[], metavar="DIR",
                   help="a run directory for the Sample and Runs pages (repeatable)")
    p.add_argument("--course", type=Path, metavar="DIR", help="a report folder written by `tinydiffusion course`")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 = any free port)")
    p.set_defaults(func=run_lab)


def run_lab(args):
    from ..errors import UserError
    from ..lab.server import Lab, make_server

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}.")
    if args.course is not None and not args.course.is_dir():
        raise UserError(f"--course {args.course} is not a folder; write one with `tinydiffusion course --out DIR`.")
    lab = Lab(args.run, args.course)
    server = make_server(lab, args.port)
    host, port = server.server_address[:2]
    print(f"the lab is at http://{host}:{port}/forward (Sample, Runs and Course pages from its menu); Ctrl-C stops it",
          flush=True)
    try:
        server.serve_forever()
    finally:
        lab.jobs.cancel_all()
        server.server_close()
