"""Sample-quality metrics: the math against closed forms, the classifier features against real and corrupted
digits, input validation, the Inception plumbing and the `eval` command. A small classifier is trained once
into a temporary cache, so nothing depends on (or writes to) the user's cache."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinydiffusion.cli import main
from tinydiffusion.data import load_dataset, load_samples
from tinydiffusion.data.idx import FASHION_DIR
from tinydiffusion.errors import UserError
from tinydiffusion.eval.evaluate import evaluate_samples
from tinydiffusion.eval.features import train_classifier
from tinydiffusion.eval.metrics import frechet_distance, gaussian_stats, normalised_entropy, prdc


# -------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A classifier trained briefly (1 epoch on 10k digits) into a temporary cache, for this module only."""
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYDIFFUSION_CACHE", str(d))
        info = train_classifier("mnist", epochs=1, limit=10_000, quiet=True)
        assert info["test_accuracy"] > 0.93
        yield d


@pytest.fixture(scope="module")
def test_split(cache):
    ds = load_dataset("mnist", "test")
    return ds.images.float() / 255, ds.labels  # (10000, 1, 28, 28) in [0, 1], (10000,)


@pytest.fixture(scope="module")
def real(test_split):
    """1000 test digits (a fixed subset), their labels, and the floor: 1000 train digits vs the test split."""
    x, y = test_split
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:1000]
    train = load_dataset("mnist", "train")
    floor = evaluate_samples(train.images[:1000].float() / 255)
    return x[idx], y[idx], floor


# ------------------------------------------------------------------------------------------------ math
def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    mu1, mu2, a, b = rng.normal(size=4), rng.normal(size=4), rng.uniform(0.1, 3, 4), rng.uniform(0.1, 3, 4)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # non-commuting 2x2 covariances: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for a 2x2 M with eigenvalues >= 0
    s1, s2 = np.array([[2.0, 0.9], [0.9, 1.0]]), np.array([[0.5, -0.3], [-0.3, 1.5]])
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = 1.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance([1.0, 0.0], s1, [0.0, 0.0], s2) == pytest.approx(expected, rel=1e-12)
    # singular covariances (no Cholesky factor): the symmetric-square-root path
    a, b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.0, 3.0])
    expected = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # zero for identical Gaussians, even singular ones; invariant under a rotation of feature space
    x, y = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)), rng.normal(size=(400, 6))
    x[:, 5] = 0.0
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(x)) == pytest.approx(0.0, abs=1e-9)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert frechet_distance(*gaussian_stats(x @ q), *gaussian_stats(y @ q)) == pytest.approx(
        frechet_distance(*gaussian_stats(x), *gaussian_stats(y)), rel=1e-9)


def test_prdc_on_a_constructed_case():
    # real: 10 points on a line, spacing 1, so every k=1 ball has radius 1. fake: 5 points, 4 of them on the
    # first half of the real line and one far away.
    real = torch.arange(10.0)[:, None]
    fake = torch.tensor([[0.5], [1.0], [2.5], [3.0], [100.0]])
    m = prdc(real, fake, k=1)
    assert m["precision"] == pytest.approx(4 / 5)  # 100 is in no real ball
    # fake k=1 radii: 0.5, 0.5, 0.5, 0.5, 97 -> reals 0..3 are covered by small balls, and the far fake's ball
    # (radius 97 around 100) reaches reals 3..9: every real point is inside the fake manifold
    assert m["recall"] == pytest.approx(1.0)
    # density: real balls containing each fake: 0.5 -> {0, 1}, 1 -> {0, 1, 2}, 2.5 -> {2, 3}, 3 -> {2, 3, 4}
    assert m["density"] == pytest.approx((2 + 3 + 2 + 3 + 0) / (1 * 5))
    # coverage: reals with a fake inside their own ball (closed): 0, 1, 2, 3, and 4 (3.0 is exactly 1 away)
    assert m["coverage"] == pytest.approx(5 / 10)
    # mode collapse: fakes on one of two real clusters -> precision 1, recall 1/2
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 2, generator=rng), torch.randn(200, 2, generator=rng) + 50
    m = prdc(torch.cat([a, b]), torch.randn(200, 2, generator=rng), k=5)
    assert m["precision"] > 0.9 and m["recall"] == pytest.approx(0.5, abs=0.05)


def test_normalised_entropy():
    assert normalised_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([0, 12, 0, 0]) == 0.0
    assert normalised_entropy([1, 1, 0, 0]) == pytest.approx(math.log(2) / math.log(4))


# ------------------------------------------------------------------------------------- real and fake data
def test_real_digits_sit_at_the_floor_and_noise_is_far(real):
    x, _, floor = real
    m = evaluate_samples(x)
    assert set(m) >= {"n", "fd_classifier", "precision", "recall", "density", "coverage", "class_entropy"}
    assert m["n"] == 1000 and m["k"] == 5
    assert m["fd_classifier"] <= 1.5 * floor["fd_classifier"]
    assert m["precision"] > 0.85 and m["recall"] > 0.85
    assert floor["precision"] > 0.85 and floor["recall"] > 0.85
    assert m["class_entropy"] > 0.98  # test digits are nearly balanced
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    n = evaluate_samples(noise)
    assert n["fd_classifier"] > 50 * floor["fd_classifier"]
    assert n["precision"] < 0.05 and n["recall"] < 0.05


def _blur(x, sigma):
    """Separable Gaussian blur of (N, 1, H, W) with a (2r+1)-tap kernel."""
    if sigma == 0:
        return x
    r = math.ceil(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))


def test_fd_rises_monotonically_with_noise_and_blur(real):
    x = real[0][:500]
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x.shape, generator=g)
    noisy = [evaluate_samples((x + s * eps).clamp(0, 1), metrics=("fd_classifier",))["fd_classifier"]
             for s in (0.0, 0.1, 0.2, 0.3, 0.5)]
    blurred = [evaluate_samples(_blur(x, s).clamp(0, 1), metrics=("fd_classifier",))["fd_classifier"]
               for s in (0.0, 0.7, 1.0, 1.5, 2.0)]
    assert all(a < b for a, b in zip(noisy, noisy[1:])), noisy
    assert all(a < b for a, b in zip(blurred, blurred[1:])), blurred


def test_one_class_has_low_recall_and_low_entropy(test_split):
    x, y = test_split
    ones = x[y == 1]  # all 1135 test "1"s: real digits, one class (about a tenth of the test split)
    m = evaluate_samples(ones, metrics=("recall", "coverage", "class_entropy"))
    # real digits score ~0.95 on both; k-NN recall sits above coverage because a few odd "1"s have big
    # k-NN balls that swallow other digits (the outlier weakness Naeem et al. 2020 designed coverage against)
    assert m["recall"] < 0.4 and m["coverage"] < 0.25
    assert m["class_entropy"] < 0.15
    assert "fd_classifier" not in m  # only what was asked for


def test_label_accuracy_and_determinism(real):
    x, y, _ = real
    x, y = x[:300], y[:300]
    m1 = evaluate_samples(x, y)
    assert m1["label_accuracy"] > 0.9
    assert evaluate_samples(x, (y + 1) % 10)["label_accuracy"] < 0.1
    assert evaluate_samples(x.clone(), y.clone()) == m1  # same input, bit-identical numbers


# -------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_get_clear_errors(real, tmp_path):
    x = real[0][:50]
    cases = [
        (x[:, 0], "expected (N, 1, 28, 28)"),  # (N, H, W)
        (torch.rand(50, 3, 28, 28), "expected (N, 1, 28, 28)"),
        (torch.rand(50, 1, 32, 32), "expected (N, 1, 28, 28)"),
        (x * 2 - 1, "expected [0, 1]"),
        (torch.full((50, 1, 28, 28), float("nan")), "NaN"),
        (torch.zeros(0, 1, 28, 28), "Need more than 5 samples"),
        (x.numpy(), "must be a torch.Tensor"),
    ]
    for images, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            evaluate_samples(images)
    with pytest.raises(UserError, match="Unknown dataset 'nope'"):
        evaluate_samples(x, dataset="nope")
    with pytest.raises(UserError, match="Unknown metric"):
        evaluate_samples(x, metrics=("fid",))
    with pytest.raises(UserError, match="label_accuracy needs labels"):
        evaluate_samples(x, metrics=("label_accuracy",))
    with pytest.raises(UserError, match="Labels must be"):
        evaluate_samples(x, torch.full((50,), 10))
    # files
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "nokey.npz", pictures=np.zeros((2, 1, 28, 28), np.float32))
    np.save(tmp_path / "bare.npy", np.zeros((2, 1, 28, 28), np.float32))
    (tmp_path / "folder").mkdir()
    (tmp_path / "grid.png").write_bytes(b"\x89PNG")
    for name, message in [("missing.npz", "No samples file"), ("empty.npz", "is empty"),
                          ("text.npz", "not a readable .npz"), ("nokey.npz", "no 'images' array"),
                          ("bare.npy", "single array, not an .npz"),
                          ("folder", "holds no .png"), ("grid.png", "single PNG")]:
        with pytest.raises(UserError, match=message):
            load_samples(tmp_path / name)


def test_png_folder_round_trip(real, tmp_path):
    from PIL import Image

    x = real[0][:8]
    for i, img in enumerate(x):
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(tmp_path / f"{i:03d}.png")
    images, labels = load_samples(tmp_path)
    assert labels is None and images.shape == (8, 1, 28, 28)
    assert torch.allclose(images, (x * 255).round() / 255, atol=1e-6)


# -------------------------------------------------------------------------------------------- inception
class _StandIn(nn.Module):
    """A tiny 'Inception': demands (N, 3, 299, 299) in [0, 1], returns 2048-d features."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 2048)

    def forward(self, x):
        if x.shape[1] != 3 or x.shape[2] != 299 or x.shape[3] != 299 or x.max() > 1:
            raise RuntimeError("expected (N, 3, 299, 299) in [0, 1]")
        return [torch.tanh(self.proj(F.adaptive_avg_pool2d(x, 8).flatten(1)))]  # (N, 192) -> (N, 2048)


class _NvidiaStyle(nn.Module):
    """NVIDIA's detector convention: input 0..255, features only with return_features=True."""

    def forward(self, img, return_features: bool = False):
        if img.max() <= 1:
            raise RuntimeError("expected 0..255 input")
        pooled = F.adaptive_avg_pool2d(img / 255, 1).flatten(1).mean(1, keepdim=True)  # (N, 3) -> (N, 1)
        return pooled.expand(-1, 2048) if return_features else pooled.expand(-1, 1008)  # features or "logits"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, yet the standard FID file
def test_inception_plumbing_with_torchscript_stand_ins(real, tmp_path, cache, monkeypatch):
    from dataclasses import replace

    import tinydiffusion.eval.evaluate as evaluate
    import tinydiffusion.eval.features as features
    from tinydiffusion.eval.inception import load_inception

    test = load_dataset("mnist", "test")
    subset = replace(test, images=test.images[:500], labels=test.labels[:500])
    for module in (features, evaluate):  # resizing 10k digits to 299x299 takes a minute; 500 will do
        monkeypatch.setattr(module, "load_dataset", lambda name, split, *a, **kw: subset)
    torch.manual_seed(0)
    path = tmp_path / "standin.pt"
    torch.jit.script(_StandIn()).save(str(path))
    x = real[0][:100]
    m = evaluate_samples(x, metrics=("fd_inception",), inception=path)
    assert set(m) == {"n", "fd_inception"} and math.isfinite(m["fd_inception"])
    assert len(list((cache / "reference").glob("mnist-inception-*.safetensors"))) == 1  # cached per file
    noise = evaluate_samples(torch.rand(100, 1, 28, 28), metrics=("fd_inception",), inception=path)
    assert noise["fd_inception"] > 10 * m["fd_inception"]
    assert evaluate_samples(x, metrics=("fd_inception",), inception=path) == m  # deterministic, cache reused
    nv = tmp_path / "nvidia.pt"
    torch.jit.script(_NvidiaStyle()).save(str(nv))
    assert load_inception(nv)(x[:4]).shape == (4, 2048)


def test_inception_state_dict_is_rebuilt(tmp_path):
    from safetensors.torch import save_file

    from tinydiffusion.eval.inception import FIDInceptionV3, load_inception

    net = FIDInceptionV3().eval()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # as in pytorch-fid's file
    save_file(state, tmp_path / "pt_inception.safetensors")
    x = torch.rand(2, 1, 28, 28)
    out = load_inception(tmp_path / "pt_inception.safetensors")(x)
    with torch.no_grad():
        big = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # (2, 1, 299, 299)
        direct = net(big.expand(-1, 3, -1, -1) * 2 - 1)
    assert out.shape == (2, 2048) and torch.allclose(out, direct)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="neither TorchScript nor a state dict"):
        load_inception(tmp_path / "junk.pt")


# -------------------------------------------------------------------------------------------------- CLI
def test_eval_cli_on_a_samples_file(real, tmp_path, capsys):
    x, y, _ = real
    path, out = tmp_path / "s.npz", tmp_path / "r.json"
    np.savez(path, images=x[:200].numpy(), labels=y[:200].numpy())
    assert main(["eval", "--samples", str(path), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fd_classifier" in printed and "label_accuracy" in printed
    report = json.loads(out.read_text())
    assert report["metrics"]["label_accuracy"] > 0.9 and sum(report["class_histogram"].values()) == 200
    assert main(["eval", "--samples", str(tmp_path / "missing.npz")]) == 2
    assert "No samples file" in capsys.readouterr().err


def test_eval_cli_on_a_run_appends_to_metrics(cache, tmp_path, capsys):
    from dataclasses import replace

    from tinydiffusion.checkpoint import model_from_config, save_checkpoint
    from tinydiffusion.config import ModelConfig, get_preset

    cfg = replace(get_preset("mnist"), model=ModelConfig(name="unet-small"))
    torch.manual_seed(0)
    net = model_from_config(cfg, (1, 28, 28), 0)  # untrained: the plumbing, not the quality
    meta = dict(dataset="mnist", shape=[1, 28, 28], num_classes=0, class_names=[], step=7)
    save_checkpoint(tmp_path, cfg, meta, net, None, torch.optim.Adam(net.parameters()), dict(step=7))
    (tmp_path / "metrics.jsonl").write_text(json.dumps(dict(step=7, loss=0.1)) + "\n")
    assert main(["eval", "--run", str(tmp_path), "--n", "16", "--steps", "2", "--device", "cpu",
                 "--raw", "--metrics", "fd_classifier,class_entropy"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["loss"] == 0.1
    assert rows[1]["step"] == 7 and set(rows[1]["eval"]) == {"n", "fd_classifier", "class_entropy"}
    assert rows[1]["sampling"]["steps"] == 2


def test_eval_every_hook_appends_a_row(cache, tmp_path):
    from tinydiffusion.checkpoint import model_from_config
    from tinydiffusion.config import apply_overrides, get_preset
    from tinydiffusion.eval.evaluate import evaluate_during_training
    from tinydiffusion.paths import make_path

    cfg = apply_overrides(get_preset("mnist"), ["train.eval_every=100", "train.eval_n=12", "sample.steps=2"])
    assert cfg.train.eval_every == 100
    torch.manual_seed(0)
    net = model_from_config(cfg, (1, 28, 28), 0)
    meta = dict(dataset="mnist", shape=[1, 28, 28], num_classes=0)
    evaluate_during_training(net, make_path("ddpm-linear", 1000), cfg, meta, 100, tmp_path / "m.jsonl", "cpu")
    row = json.loads((tmp_path / "m.jsonl").read_text())
    assert row["step"] == 100 and row["eval"]["n"] == 12 and "fd_classifier" in row["eval"]


@pytest.mark.parametrize("dataset, floor", [
    ("mnist", 0.99),
    pytest.param("fashion", 0.90, marks=pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Debian's "
                                                           "dataset-fashion-mnist")),
])
def test_the_shipped_classifier_reproduces_its_recorded_test_accuracy(dataset, floor):
    """fd_classifier is one function on every machine: the package ships the weights; on the 10k test images
    they classify exactly as recorded when they were made (float32, no autocast)."""
    from tinydiffusion.eval.features import METRIC_VERSION, classifier_outputs, load_classifier, shipped_paths

    assert shipped_paths(dataset) is not None
    net, info = load_classifier(dataset)
    test = load_dataset(dataset, "test")
    _, pred = classifier_outputs(net, test.images.float() / 255)
    assert (pred == test.labels).double().mean().item() == pytest.approx(info["test_accuracy"], abs=1e-4)
    assert info["test_accuracy"] > floor and info["metric_version"] == METRIC_VERSION


def test_eval_json_names_the_metric_version(tmp_path):
    x = load_dataset("mnist", "test").images[:50].float() / 255
    np.savez(tmp_path / "s.npz", images=x.numpy())
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--metrics", "fd_classifier",
                 "--json", str(tmp_path / "r.json")]) == 0
    import json
    assert json.loads((tmp_path / "r.json").read_text())["classifier"]["metric_version"] == "fd_classifier/1"
