"""One writer per run directory: `run_lock(out)` holds out/.lock (the owner's pid and host) while training, takes
over a lock left by a process that no longer exists (with a note), and refuses a live owner with one sentence."""
from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: does the process exist (and may we signal it)?
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


@contextmanager
def run_lock(out: Path):
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot write to {out} ({e.strerror}); choose a writable --out.") from None
    path, me = out / LOCK, dict(pid=os.getpid(), host=socket.gethostname())
    for _ in range(2):  # the second try follows the removal of a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                owner = json.loads(path.read_text())
                pid, host = int(owner["pid"]), owner.get("host")
            except (OSError, ValueError, KeyError, TypeError):
                pid, host = None, None
            if pid is not None and host == me["host"] and _alive(pid):
                raise UserError(f"{out} is being written by another training process (pid {pid}); wait for it to "
                                "finish, or choose another --out.") from None
            if pid is not None and host != me["host"]:  # we cannot see that machine's processes
                raise UserError(f"{out} is locked by pid {pid} on {host}; if that process is gone, delete "
                                f"{path} and start again.") from None
            print(f"note: taking over the lock of {out} left by a process that is gone (pid {pid}).", file=sys.stderr)
            path.unlink(missing_ok=True)
        except OSError as e:
            raise UserError(f"Cannot write to {out} ({e.strerror}); choose a writable --out.") from None
    else:
        raise UserError(f"Cannot take the lock {path}; remove it if no training process uses {out}.")
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
