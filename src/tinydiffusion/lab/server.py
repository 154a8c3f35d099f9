"""The lab's HTTP server: the standard library's ThreadingHTTPServer, JSON endpoints and server-sent events.

Why the standard library: the page needs a few JSON endpoints and one event stream per sampling job, which
http.server and `text/event-stream` give with nothing to install; the samplers' callback feeds the stream.
Every bad request gets a 4xx status and a JSON {"error": one sentence}; the server keeps serving.
"""
from __future__ import annotations

import json
import mimetypes
import queue
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import UserError
from . import forward, runinfo, sampling

STATIC = files("tinydiffusion.lab") / "static"
PAGES = {"/forward": "forward.html", "/sample": "sample.html", "/runs": "runs.html", "/course": "course.html"}
MAX_BODY = 4 * 2**20  # an uploaded picture as a data URL
KEEPALIVE_S = 15  # an SSE comment this often, so a dead client is noticed and its job cancelled


class TooLarge(Exception):
    pass


class Lab:
    """What the handlers share: the runs, the sampling jobs, the course report folder."""

    def __init__(self, runs: list[Path] = (), course_dir: Path | None = None):
        self.runs = runinfo.RunList(list(runs))
        self.jobs = sampling.Jobs()
        self.course_dir = Path(course_dir) if course_dir else None


class Handler(BaseHTTPRequestHandler):
    server_version = "tinydiffusion-lab"
    lab: Lab  # set by make_server on a subclass

    # ------------------------------------------------------------------------------------------ plumbing
    def log_request(self, code="-", size="-"):  # one quiet line per failed request, nothing per good one
        if isinstance(code, int) and code >= 400:  # HTTPStatus is an int
            sys.stderr.write(f"lab: {self.command} {self.path.split('?')[0]} -> {int(code)}\n")

    def log_message(self, fmt, *args):
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200):
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str):
        self._json({"error": message}, status)

    def _query(self) -> dict:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _body(self) -> dict:
        size = int(self.headers.get("Content-Length") or 0)
        if size > MAX_BODY:
            raise TooLarge
        raw = self.rfile.read(size) if size else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError("The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise UserError("The request body must be a JSON object.")
        return body

    def _guarded(self, route):
        try:
            route()
        except UserError as e:
            self._error(400, str(e))
        except LookupError as e:
            self._error(404, str(e.args[0]) if e.args else "Not found.")
        except TooLarge:
            self._error(413, f"The request is larger than {MAX_BODY // 2**20} MiB; upload a smaller picture.")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # a bug, not a bad request: one line, no traceback on the page
            self._error(500, f"The lab failed on this request ({type(e).__name__}: {e}).")

    def do_GET(self):
        self._guarded(self._get)

    def do_HEAD(self):
        self._guarded(self._get)

    def do_POST(self):
        self._guarded(self._post)

    # ------------------------------------------------------------------------------------------ routes
    def _get(self):
        path, q = urlsplit(self.path).path, self._query()
        if path == "/":
            return self._send(302, b"", "text/plain", {"Location": "/forward"})
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        if path in PAGES:
            return self._static(PAGES[path])
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path.startswith("/course/report/"):
            return self._course_file(path[len("/course/report/"):])
        api = {"/api/forward": lambda: forward.forward_view(q), "/api/curves": lambda: forward.curves(q),
               "/api/runs": self.lab.runs.summaries,
               "/api/run": lambda: runinfo.details(q.get("run"), self.lab.runs.get(q.get("run"))),
               "/api/course": self._course_status}
        if path in api:
            return self._json(api[path]())
        if path == "/api/runfile":
            return self._file(runinfo.run_file(self.lab.runs.get(q.get("run")), q.get("file", "")))
        if path == "/api/events":
            return self._events(q.get("job", ""))
        raise LookupError(f"No page {path}; the lab has {', '.join(PAGES)}.")

    def _post(self):
        path, body = urlsplit(self.path).path, self._body()
        if path == "/api/forward":
            return self._json(forward.forward_view(body))
        if path == "/api/sample":
            run_dir = self.lab.runs.get(body.get("run"))
            args = sampling.parse_request(body, run_dir)  # UserError -> 400 before anything runs
            job = self.lab.jobs.start(str(body.get("client") or self.client_address[0]), run_dir, args)
            return self._json(dict(job=job.id, n=args["n"], steps=args["steps"], sampler=args["sampler"],
                                   **args.get("pictures", {})))  # a ControlNet run: its map as the net reads it
        raise LookupError(f"No endpoint POST {path}.")

    # ------------------------------------------------------------------------------------------ answers
    def _static(self, name: str):
        res = STATIC / name
        if "/" in name or name.startswith(".") or not res.is_file():
            raise LookupError(f"No static file {name}.")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(200, res.read_bytes(), ctype + ("; charset=utf-8" if ctype.startswith("text/") else ""))

    def _file(self, path: Path):
        self._send(200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    def _course_status(self) -> dict:
        d = self.lab.course_dir
        ready = bool(d and (d / "course.html").is_file())
        return dict(ready=ready, dir=str(d) if d else None, url="/course/report/course.html" if ready else None)

    def _course_file(self, rel: str):
        d = self.lab.course_dir
        if d is None:
            raise LookupError("The lab was started without --course DIR.")
        path = (d / rel).resolve()
        if d.resolve() not in path.parents or not path.is_file():
            raise LookupError(f"No {rel} in the course report.")
        self._file(path)

    def _events(self, job_id: str):
        """The job's frames as server-sent events: `event: frame|done|error|cancelled`, `data: JSON`."""
        job = self.lab.jobs.get(job_id)  # KeyError -> 404
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            while True:
                try:
                    kind, data = job.events.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    continue
                self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
                if kind != "frame":
                    return
        except (BrokenPipeError, ConnectionResetError):
            job.cancel.set()  # nobody is watching: stop sampling
        self.close_connection = True


def make_server(lab: Lab, port: int = 8765, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free port); serve_forever() runs it."""
    handler = type("LabHandler", (Handler,), {"lab": lab})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise UserError(f"Cannot listen on {host}:{port} ({e.strerror}); choose another --port.") from None
    server.daemon_threads = True
    return server
