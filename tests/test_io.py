"""io.py: a write either replaces the file whole or leaves the old one untouched."""
from __future__ import annotations

import os

import pytest

from tinydiffusion.errors import UserError
from tinydiffusion.io import atomic_write, write_bytes, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["a.txt"]


def test_files_get_the_usual_permissions_and_parents_are_made(tmp_path):
    path = tmp_path / "deep" / "er" / "b.txt"
    write_text(path, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_unwritable_folder_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="Cannot write to"):
        write_text(blocker / "x.txt", "x")
