"""Dataset loaders on files the tests write (IDX, CIFAR-10 pickles, image folders, .npz): shapes, values,
labels and class names; clear errors for bad input; a few training steps and samples on each; `data info`."""
import gzip
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinydiffusion.checkpoint import load_meta
from tinydiffusion.cli import main
from tinydiffusion.data import (
    DATASETS,
    ImageDataset,
    conform,
    convert_channels,
    load_dataset,
    read_idx,
    resize_center_crop,
    resolve,
    to_unit_range,
    write_samples,
)
from tinydiffusion.data.idx import FASHION_CLASSES, FASHION_DIR
from tinydiffusion.errors import UserError
from tinydiffusion.runs import sample_run
from tinydiffusion.train import train
from tinydiffusion.viz.grids import save_grid

from conftest import TINY, tiny_config

rng = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------ file writers
def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> Path:
    """The IDX layout: 0, 0, type code, ndim; big-endian uint32 sizes; big-endian values. .gz names are gzipped."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING), as the official CIFAR-10 files have them."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # numpy 1's module name


def write_cifar(folder: Path, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """data_batch_1, data_batch_2 (Python 2 pickles), test_batch (a Python 3 pickle), batches.meta.
    Returns the train images (2n, 3, 32, 32) and labels written."""
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, (3 * n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(3 * n) % 10
    for k, name in enumerate(["data_batch_1", "data_batch_2", "test_batch"]):
        part = slice(k * n, (k + 1) * n)
        batch = {b"batch_label": name.encode(), b"labels": labels[part].tolist(),
                 b"data": images[part].reshape(n, 3072),  # (n, 3, 32, 32) -> (n, 3072): R, G, B planes, row-major
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4) if name == "test_batch" else py2_pickle(batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return images[:2 * n], labels[:2 * n]


def png(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One of each kind of dataset, written once for the module."""
    root = tmp_path_factory.mktemp("datasets")
    idx = root / "idx"
    idx.mkdir()
    digits = rng.integers(0, 256, (10, 12, 12), dtype=np.uint8)
    write_idx(idx / "train-images-idx3-ubyte.gz", digits[:6])
    write_idx(idx / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 9]))
    write_idx(idx / "t10k-images-idx3-ubyte", digits[6:])  # raw, as after gunzip
    write_idx(idx / "t10k-labels-idx1-ubyte", np.array([5, 6, 7, 8]))
    cifar_images, cifar_labels = write_cifar(root / "cifar" / "cifar-10-batches-py")
    folder = root / "pets"  # two classes, odd sizes, RGB, JPEG, gray, palette and alpha images
    png(folder / "cats" / "a.png", rng.integers(0, 256, (23, 40, 3), dtype=np.uint8))
    png(folder / "cats" / "b.jpg", rng.integers(0, 256, (50, 17, 3), dtype=np.uint8), quality=90)
    png(folder / "cats" / "nested" / "c.png", rng.integers(0, 256, (9, 9), dtype=np.uint8))  # gray
    png(folder / "dogs" / "d.png", rng.integers(0, 256, (31, 31, 4), dtype=np.uint8))  # RGBA
    Image.fromarray(rng.integers(0, 256, (20, 25, 3), dtype=np.uint8)).convert("P").save(folder / "dogs" / "e.png")
    (folder / "dogs" / ".DS_Store").write_bytes(b"\0junk")
    (folder / "dogs" / "._e.png").write_bytes(b"\0junk")  # macOS resource fork: skipped, not an error
    flat = root / "flat"  # grayscale, no labels
    for i in range(5):
        png(flat / f"{i}.png", rng.integers(0, 256, (20 + i, 30, 1), dtype=np.uint8)[..., 0])
    x = rng.random((6, 3, 8, 8)).astype(np.float32)
    np.savez(root / "arrays.npz", images=x, labels=np.array([0, 1, 2, 0, 1, 2]))
    return dict(root=root, idx=idx, digits=digits, cifar=root / "cifar", cifar_images=cifar_images,
                cifar_labels=cifar_labels, folder=folder, flat=flat, npz=root / "arrays.npz", npz_images=x)


# ------------------------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("code,values", [(0x08, np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
                                         (0x0B, np.array([[-300, 2], [7, 30000]])), (0x0D, np.array([0.5, -2.25]))])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_every_dtype_raw_and_gzipped(tmp_path, code, values, suffix):
    back = read_idx(write_idx(tmp_path / f"x-idx{suffix}", values, code))
    assert back.shape == values.shape and back.dtype.isnative
    np.testing.assert_array_equal(back, values)


def test_idx_folder_gives_both_splits_with_labels(files):
    train_set, test_set = (load_dataset("idx", split, str(files["idx"])) for split in ("train", "test"))
    assert train_set.images.shape == (6, 1, 12, 12) and test_set.images.shape == (4, 1, 12, 12)
    assert torch.equal(train_set.images[:, 0], torch.from_numpy(files["digits"][:6]))
    assert train_set.labels.tolist() == [0, 1, 2, 3, 4, 9] and test_set.labels.tolist() == [5, 6, 7, 8]
    assert train_set.num_classes == 10 and train_set.class_names == tuple("0123456789")
    assert resolve(str(files["idx"])) == ("idx", str(files["idx"]))  # a bare path is recognised


def test_emnist_images_are_transposed_upright(tmp_path):
    x = np.zeros((1, 4, 4), np.uint8)
    x[0, 0, 3] = 255  # stored transposed: this pixel belongs at row 3, column 0
    write_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte", x)
    ds = load_dataset("idx", "train", str(tmp_path))
    assert ds.images[0, 0, 3, 0] == 255 and ds.labels is None


def test_idx_errors_are_clear(tmp_path, files):
    (tmp_path / "bad-idx").write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(UserError, match="not an IDX file.*00000803"):
        read_idx(tmp_path / "bad-idx")
    good = write_idx(tmp_path / "good-idx", np.zeros((3, 4, 4), np.uint8)).read_bytes()
    (tmp_path / "short-idx").write_bytes(good[:-5])
    with pytest.raises(UserError, match="truncated or damaged.*download it again"):
        read_idx(tmp_path / "short-idx")
    (tmp_path / "x-idx.gz").write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(UserError, match="damaged gzip"):
        read_idx(tmp_path / "x-idx.gz")
    with pytest.raises(UserError, match="does not exist"):
        read_idx(tmp_path / "missing-idx")
    with pytest.raises(UserError, match="no IDX images for the train split"):
        load_dataset("idx", "train", str(tmp_path))
    with pytest.raises(UserError, match="needs data.path"):
        load_dataset("idx")
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    write_idx(mismatch / "train-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    write_idx(mismatch / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(UserError, match="2 labels but 3 images"):
        load_dataset("idx", "train", str(mismatch))


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed "
                    "(scripts/install.sh installs it when run as root)")
def test_real_fashion_mnist_loads():
    train_set, test_set = load_dataset("fashion", "train"), load_dataset("fashion", "test")
    assert (len(train_set), len(test_set)) == (60000, 10000) and train_set.shape == (1, 28, 28)
    assert train_set.class_names == FASHION_CLASSES and train_set.class_names[9] == "Ankle boot"
    assert torch.bincount(train_set.labels).tolist() == [6000] * 10
    assert torch.bincount(test_set.labels).tolist() == [1000] * 10
    assert 0.25 < train_set.images[:1000].float().mean() / 255 < 0.33  # dark background, bright clothes


def test_fashion_elsewhere_says_how_to_install(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion", "train", str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------------------------- CIFAR-10
def test_cifar_folder_loads_planes_labels_and_names(files, monkeypatch):
    ds = load_dataset("cifar10", "train", str(files["cifar"]))  # the parent of cifar-10-batches-py works too
    assert ds.images.shape == (12, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, torch.from_numpy(files["cifar_images"]))
    flat = files["cifar_images"].reshape(12, 3072)  # the file's layout: 1024 R, then G, then B, row-major
    assert ds.images[5, 1, 2, 7] == flat[5, 1024 + 2 * 32 + 7]
    assert ds.labels.tolist() == files["cifar_labels"].tolist()
    assert ds.num_classes == 10 and ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    monkeypatch.setenv("CIFAR10_DIR", str(files["cifar"] / "cifar-10-batches-py"))
    test_set = load_dataset("cifar10", "test")  # from the environment variable; a Python 3 pickle
    assert test_set.images.shape == (6, 3, 32, 32) and test_set.labels.tolist() == [2, 3, 4, 5, 6, 7]


def test_cifar_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    with pytest.raises(UserError, match="CIFAR10_DIR"):
        load_dataset("cifar10")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("cifar10", "train", str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no data_batch_1"):
        load_dataset("cifar10", "train", str(tmp_path))
    whole = py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})
    (tmp_path / "data_batch_1").write_bytes(whole[:-40])  # truncated
    with pytest.raises(UserError, match="data_batch_1 is not a readable CIFAR-10 file"):
        load_dataset("cifar10", "train", str(tmp_path))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}))
    with pytest.raises(UserError, match="not a CIFAR-10 batch"):
        load_dataset("cifar10", "train", str(tmp_path))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Path("x")}))  # a class the unpickler refuses
    with pytest.raises(UserError, match="refusing to load"):
        load_dataset("cifar10", "train", str(tmp_path))
    with pytest.raises(UserError, match="test_batch is missing"):
        load_dataset("cifar10", "test", str(tmp_path))


# ------------------------------------------------------------------------------------------ image folders
def test_image_folder_with_classes_is_cropped_resized_and_labelled(files):
    ds = load_dataset("folder", "train", str(files["folder"]), image_size=16)
    assert ds.images.shape == (5, 3, 16, 16) and ds.images.dtype == torch.uint8  # mixed gray/colour -> RGB
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.class_names == ("cats", "dogs")
    gray = load_dataset("folder", "train", str(files["folder"]), image_size=16, channels=1)
    assert gray.images.shape == (5, 1, 16, 16)
    assert load_dataset(str(files["folder"])).shape == (3, 32, 32)  # a bare path; 32 px by default


def test_flat_gray_folder_has_one_channel_and_no_labels(files):
    ds = load_dataset("folder", "test", str(files["flat"]), image_size=20)
    assert ds.images.shape == (5, 1, 20, 20) and ds.labels is None and ds.num_classes == 0
    assert load_dataset("folder", "train", str(files["flat"]), channels=3).shape == (3, 32, 32)


def test_folder_crops_the_centre_of_the_shorter_side_and_flattens_alpha_onto_white(tmp_path):
    stripes = np.zeros((10, 30, 3), np.uint8)
    stripes[:, :10, 0], stripes[:, 10:20, 1], stripes[:, 20:, 2] = 255, 255, 255  # red | green | blue
    png(tmp_path / "a" / "stripes.png", stripes)
    clear = np.zeros((10, 10, 4), np.uint8)  # fully transparent black
    png(tmp_path / "a" / "clear.png", clear)
    ds = load_dataset("folder", "train", str(tmp_path), image_size=10)
    middle = ds.images[1, :, 2:8, 2:8]  # files are sorted: clear.png, stripes.png
    assert middle[1].min() > 240 and middle[0].max() < 15 and middle[2].max() < 15
    assert ds.images[0].min() == 255


def test_folder_errors_are_clear(tmp_path, files):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        load_dataset("folder", "train", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("folder", "train", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"))
    png(tmp_path / "mixed" / "loose.png", np.zeros((4, 4), np.uint8))
    png(tmp_path / "mixed" / "cls" / "x.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="mixes loose images"):
        load_dataset("folder", "train", str(tmp_path / "mixed"))
    png(tmp_path / "broken" / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "broken" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match="bad.jpg is not a readable image"):
        load_dataset("folder", "train", str(tmp_path / "broken"))
    with pytest.raises(UserError, match="image_size=2 is out of range"):
        load_dataset("folder", "train", str(files["flat"]), image_size=2)
    with pytest.raises(UserError, match="channels=2"):
        load_dataset("mnist", "test", channels=2)


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            png(tmp_path / split / "only" / f"{i}.png", np.full((8, 8), 10 * i, np.uint8))
    assert len(load_dataset(str(tmp_path), "train")) == 3 and len(load_dataset(str(tmp_path), "test")) == 2


# --------------------------------------------------------------------------------------------------- npz
def test_npz_float_arrays_load_as_uint8_with_labels(files):
    ds = load_dataset(str(files["npz"]))
    assert ds.name == "npz" and ds.images.shape == (6, 3, 8, 8) and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(ds.images, torch.from_numpy(np.rint(files["npz_images"] * 255).astype(np.uint8)))


def test_npz_written_by_sample_loads_back(tmp_path):
    x = torch.rand(4, 1, 6, 6) * 2 - 1  # model range
    write_samples(tmp_path / "s.npz", to_unit_range(x), labels=torch.tensor([3, 1, 0, 3]))
    ds = load_dataset("npz", "test", str(tmp_path / "s.npz"))
    back = ds.images.float() / 127.5 - 1
    assert ds.labels.tolist() == [3, 1, 0, 3] and (back - x).abs().max() <= 1 / 127.5 + 1e-6


def test_npz_channels_last_uint8_is_transposed(tmp_path):
    hwc = rng.integers(0, 256, (3, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "hwc.npz", images=hwc)
    ds = load_dataset(str(tmp_path / "hwc.npz"))
    assert torch.equal(ds.images, torch.from_numpy(hwc.transpose(0, 3, 1, 2).copy())) and ds.labels is None


def test_npz_errors_are_clear(tmp_path):
    np.savez(tmp_path / "signed.npz", images=np.full((2, 1, 4, 4), -0.5, np.float32))
    with pytest.raises(UserError, match=r"must be in \[0, 1\]"):
        load_dataset(str(tmp_path / "signed.npz"))
    np.savez(tmp_path / "keys.npz", pictures=np.zeros((2, 1, 4, 4)), other=np.zeros(2))
    with pytest.raises(UserError, match="no `images` array.*pictures"):
        load_dataset(str(tmp_path / "keys.npz"))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_dataset(str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "labels.npz", images=np.zeros((3, 1, 4, 4), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(UserError, match="2 labels but 3 images"):
        load_dataset(str(tmp_path / "labels.npz"))
    with pytest.raises(UserError, match="already a path"):
        load_dataset(str(tmp_path / "labels.npz"), "train", str(tmp_path))


# ------------------------------------------------------------------------------------- fitting helpers
def test_channel_conversion_matches_pillow_and_resizing_keeps_flat_images_flat():
    pixels = rng.integers(0, 256, (1, 7, 9, 3), dtype=np.uint8)
    luma = convert_channels(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()), 1)  # (1, 3, 7, 9) -> (1, 1, 7, 9)
    pil = np.asarray(Image.fromarray(pixels[0]).convert("L")).astype(int)
    assert np.abs(luma[0, 0].numpy().astype(int) - pil).max() <= 1
    assert torch.equal(convert_channels(luma, 3), luma.repeat(1, 3, 1, 1))
    flat = torch.full((2, 1, 28, 28), 77, dtype=torch.uint8)
    assert torch.equal(resize_center_crop(flat, 32), torch.full((2, 1, 32, 32), 77, dtype=torch.uint8))
    ds = conform(ImageDataset("x", flat, None), image_size=32, channels=3)
    assert ds.shape == (3, 32, 32)


# ----------------------------------------------------------------------------------- training on each
@pytest.mark.parametrize("kind", ["idx", "cifar", "folder", "npz"])
def test_a_few_training_steps_run_on_each_kind(files, tmp_path, kind):
    name = {"cifar": "cifar10"}.get(kind, kind)
    cfg = tiny_config(f"data.name={name}", f"data.path={files[kind]}", "train.batch_size=4",
                      f"data.hflip={kind == 'cifar'}", "sample.steps=2", steps=2)
    summary = train(cfg, tmp_path / "run", quiet=True)
    meta = load_meta(tmp_path / "run")
    shape = {"idx": [1, 12, 12], "cifar": [3, 32, 32], "folder": [3, 32, 32], "npz": [3, 8, 8]}[kind]
    assert summary["steps"] == 2 and meta["shape"] == shape and np.isfinite(summary["loss"])
    if kind == "cifar":  # colour all the way: samples, .png grid, .npz
        x = sample_run(tmp_path / "run", 4, steps=3)
        assert x.shape == (4, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
        save_grid(to_unit_range(x), tmp_path / "grid.png")
        assert Image.open(tmp_path / "grid.png").mode == "RGB"
        assert Image.open(next((tmp_path / "run" / "samples").glob("*.png"))).mode == "RGB"


def test_training_honours_data_image_size_and_channels(files, tmp_path):
    cfg = tiny_config("data.name=folder", f"data.path={files['folder']}", "data.image_size=16", "data.channels=1",
                      "train.batch_size=4", "sample.steps=1", steps=1)
    train(cfg, tmp_path / "run", quiet=True)
    assert load_meta(tmp_path / "run")["shape"] == [1, 16, 16]


def test_train_cli_takes_data_name_and_path(files, tmp_path):
    extra = ["train.batch_size=4", "sample.steps=1", "data.name=npz", f"data.path={files['npz']}"]
    sets = [a for s in TINY + extra for a in ("--set", s)]
    assert main(["train", "--preset", "mnist", "--steps", "1", "--out", str(tmp_path / "r"), "--quiet", *sets]) == 0
    assert load_meta(tmp_path / "r")["dataset"] == "npz"


# -------------------------------------------------------------------------------------------- data info
def test_data_info_prints_a_summary_and_writes_a_grid(files, tmp_path, capsys):
    assert main(["data", "info", str(files["folder"]), "--out", str(tmp_path / "g.png"), "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "5 x 3 x 16 x 16 (RGB)" in out and "cats 3, dogs 2" in out and "values" in out
    assert Image.open(tmp_path / "g.png").mode == "RGB"
    assert main(["data", "info", "cifar10", "--path", str(files["cifar"]), "--out", str(tmp_path / "c.png")]) == 0
    assert "airplane" in capsys.readouterr().out and (tmp_path / "c.png").exists()
    assert main(["data", "info", str(tmp_path / "nothing-here")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_every_registered_loader_has_a_one_line_description():
    assert {"mnist", "fashion", "cifar10", "idx", "folder", "npz"} <= set(DATASETS)
    assert all(DATASETS.text(name).strip() for name in DATASETS)
