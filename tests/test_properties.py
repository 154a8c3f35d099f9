"""Property tests (hypothesis): random --set values of every field, random .npz arrays, and random or truncated
bytes in every file format the package reads. Each input either works or is refused with one UserError; no other
exception ever escapes. Bounded in examples and time so the file runs in seconds."""
from __future__ import annotations

import dataclasses
import io
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as save_tensors

from tinydiffusion.checkpoint import load_meta, load_weights
from tinydiffusion.config import Config, apply_overrides, get_preset, load_config
from tinydiffusion.data.cifar import read_batch
from tinydiffusion.data.files import read_image
from tinydiffusion.data.idx import read_idx
from tinydiffusion.data.samples import load_samples
from tinydiffusion.errors import UserError
from tinydiffusion.validate import check_values

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,  # the same cases every run
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [f"{s.name}.{f.name}" for s in dataclasses.fields(Config) if s.name != "seed"
        for f in dataclasses.fields(getattr(Config(), s.name))] + ["seed"]  # every field of every section
VALUES = st.one_of(st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                   st.sampled_from(["true", "false", "none", "", "1,2,3", "(4, 8)", "abc", "-0", "1e309", "nan"]),
                   st.text(max_size=12))


def refused_or_fine(fn, *args):
    try:
        return fn(*args)
    except UserError as e:
        assert str(e) and "Traceback" not in str(e)
        return None


@SETTINGS
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_set_value_of_any_field_is_taken_or_refused_in_one_sentence(key, value):
    cfg = refused_or_fine(apply_overrides, get_preset("mnist"), [f"{key}={value}"])
    if cfg is not None:
        refused_or_fine(check_values, cfg)


@SETTINGS
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=5),
       dtype=st.sampled_from(["float32", "float64", "uint8", "int64", "bool", "complex64", "U3"]),
       scale=st.sampled_from([1.0, 255.0, -3.0, float("nan")]), key=st.sampled_from(["images", "x", "labels"]))
def test_any_npz_array_is_read_or_refused(tmp_path_factory, shape, dtype, scale, key):
    path = tmp_path_factory.mktemp("npz") / "s.npz"
    arr = (np.random.default_rng(0).random(shape) * scale) if dtype != "U3" else np.full(shape, "abc")
    with np.errstate(invalid="ignore"):  # nan cast to an integer type is part of the test
        np.savez(path, **{key: arr.astype(dtype)})
    refused_or_fine(load_samples, path)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(buf, format="PNG")
    return buf.getvalue()


GOOD = {
    "safetensors": save_tensors({"w": torch.zeros(3, 3)}),
    "json": json.dumps(dict(shape=[1, 28, 28], num_classes=0, dataset="mnist")).encode(),
    "png": _png_bytes(),
    "idx": bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4]) + bytes(32),
    "cifar": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}),
}


def read(kind: str, path):
    if kind == "safetensors":
        return load_weights(torch.nn.Linear(3, 3, bias=False), path)  # keys differ: a readable but foreign file
    if kind == "json":
        load_config(path)
        return load_meta(path.parent, path.parent)
    if kind == "png":
        return read_image(path, 28, "L")
    if kind == "idx":
        return read_idx(path)
    return read_batch(path)


@SETTINGS
@given(kind=st.sampled_from(sorted(GOOD)), cut=st.floats(0, 1), noise=st.binary(max_size=64),
       mode=st.sampled_from(["truncate", "random", "append"]))
def test_damaged_files_of_every_format_are_refused_in_one_sentence(tmp_path_factory, kind, cut, noise, mode):
    d = tmp_path_factory.mktemp(kind)
    data = GOOD[kind]
    data = {"truncate": data[:int(len(data) * cut)], "random": noise, "append": data + noise}[mode]
    name = {"json": "meta.json", "png": "x.png", "idx": "x-idx3-ubyte", "cifar": "data_batch_1"}.get(kind, "w.safetensors")
    path = d / name
    path.write_bytes(data)
    if kind == "json":
        (d / "config.json").write_bytes(data)
    refused_or_fine(read, kind, path)


def test_a_cifar_pickle_that_tries_to_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError):
        read_batch(path)
