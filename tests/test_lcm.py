"""LCM (train/distill.py, method lcm): the guidance-scale input starts at zero (the student is the teacher at every
w), the condition carries w through slicing and guidance's batching, a distilled run samples at --guidance W with
one network call of B images per step (no unconditional branch), and bad requests are one sentence."""
import pytest
import torch

from conftest import tiny_config, wake
from tinydiffusion.cli.main import main
from tinydiffusion.conditioning import Cond
from tinydiffusion.config import SampleConfig
from tinydiffusion.denoiser import Denoiser
from tinydiffusion.errors import UserError
from tinydiffusion.generate import generate
from tinydiffusion.guidance import EmbeddedGuidance, guided
from tinydiffusion.models import build_model
from tinydiffusion.runs import load_run, sample_conditional
from tinydiffusion.train import train


@pytest.fixture(scope="module")
def class_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("class_teacher") / "run"
    train(tiny_config("train.ema_decay=0.9", steps=3, preset="mnist-class"), out, device="cpu", quiet=True)
    return out


@pytest.mark.parametrize("name,kw", [("unet-small", dict(channels=8)), ("dit-tiny", dict(channels=32, depth=1,
                                                                                         patch_size=4))])
def test_a_fresh_guidance_embedding_is_the_teacher_at_every_w_and_a_trained_one_reads_w(name, kw):
    torch.manual_seed(0)
    teacher = wake(build_model(name, 1, 28, num_classes=10, **kw)).eval()
    student = build_model(name, 1, 28, num_classes=10, guidance_embedding=True, **kw).eval()
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("guidance_mlp.") for k in missing)
    x, t, labels = torch.randn(3, 1, 28, 28), torch.rand(3), torch.tensor([1, 2, 3])
    with torch.no_grad():
        ref = teacher(x, t, Cond(labels=labels))
        for w in (0.0, 1.0, 3.0):
            assert torch.equal(student(x, t, Cond(labels=labels, guidance=torch.full((3,), w))), ref)
        torch.nn.init.normal_(student.guidance_mlp[-1].weight, std=0.1)
        at = [student(x, t, Cond(labels=labels, guidance=torch.full((3,), w))) for w in (1.0, 3.0)]
        assert not torch.allclose(at[0], at[1])
        assert torch.equal(student(x, t, Cond(labels=labels)), at[0])  # no w given: w = 1


def test_the_condition_carries_w_through_slicing_nulling_and_concatenation():
    c = Cond(labels=torch.tensor([1, 2, 3]), guidance=torch.tensor([1.0, 2.0, 3.0]))
    assert c[1:].guidance.tolist() == [2.0, 3.0]
    both = Cond.cat(c, c.null())
    assert both.guidance.tolist() == [1.0, 2.0, 3.0] * 2 and both.labels.tolist()[3:] == [-1] * 3
    with pytest.raises(ValueError, match="guidance"):
        Cond(labels=torch.tensor([1]), guidance=torch.ones(1, 1))


def test_an_lcm_run_starts_as_its_teacher_and_records_its_range(class_teacher, tmp_path):
    out = tmp_path / "lcm"
    assert main(["distill", "--teacher", str(class_teacher), "--method", "lcm", "--out", str(out), "--steps", "1",
                 "--N", "4", "--guidance-range", "1,3", "--set", "train.lr=0"]) == 0
    _, teacher, _, _ = load_run(class_teacher)
    cfg, student, _, meta = load_run(out)
    assert cfg.model.guidance_embedding and cfg.diffusion.prediction == "cm-u" and cfg.sample.sampler == "consistency"
    assert meta["distill"]["method"] == "lcm" and meta["distill"]["guidance_range"] == [1.0, 3.0]
    s = student.state_dict()
    for k, v in teacher.state_dict().items():
        assert torch.equal(s[k], v), k
    assert not s["guidance_mlp.2.weight"].any() and list((out / "samples").glob("*.png"))


def test_an_lcm_run_samples_at_w_with_one_call_of_b_images_per_step(class_teacher, tmp_path, capsys):
    out = tmp_path / "lcm"
    assert main(["distill", "--teacher", str(class_teacher), "--method", "lcm", "--out", str(out), "--steps", "2",
                 "--N", "4"]) == 0
    assert "--guidance W" in capsys.readouterr().out
    cfg, net, path, _ = load_run(out)
    calls = []
    net.register_forward_hook(lambda m, args, output: calls.append(args[0].shape[0]))
    denoiser = guided(Denoiser(net, path, cfg.diffusion.prediction), 3.0)
    assert isinstance(denoiser, EmbeddedGuidance)
    x = generate(denoiser, SampleConfig(sampler="consistency", steps=4, spacing="uniform", clip_x0=False), 5,
                 (1, 28, 28), seed=0, cond=Cond(labels=torch.arange(5)))
    assert calls == [5] * 4 and x.shape == (5, 1, 28, 28) and x.isfinite().all()
    assert main(["sample", "--run", str(out), "--classes", "0-4", "--n", "5", "--steps", "4", "--guidance", "3",
                 "--out", str(tmp_path / "g.png")]) == 0
    a, _ = sample_conditional(out, 3, steps=2, labels=torch.tensor([1, 2, 3]), guidance=1.0)
    b, _ = sample_conditional(out, 3, steps=2, labels=torch.tensor([1, 2, 3]), guidance=4.0)
    assert not torch.equal(a, b)  # after two steps the w embedding is no longer zero
    with pytest.raises(UserError, match="rescale"):
        sample_conditional(out, 3, steps=2, labels=torch.tensor([1, 2, 3]), guidance=3.0, guidance_rescale=0.7)


@pytest.mark.parametrize("argv,words", [
    (["--teacher", "{uncond}"], "unconditional"),
    (["--teacher", "{teacher}", "--guidance-range", "3"], "WMIN,WMAX"),
    (["--teacher", "{teacher}", "--guidance-range", "4,1"], "w_min <= w_max"),
])
def test_bad_lcm_requests_are_one_sentence(class_teacher, tiny_run, tmp_path, capsys, argv, words):
    argv = [a.format(uncond=tiny_run, teacher=class_teacher) for a in argv]
    assert main(["distill", "--method", "lcm", *argv, "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()

