"""`tinydiffusion bench --quick`: a smoke test that the bench runs end to end and writes its table and plot.
The real measurements are run from the command line, never here."""
import json

import pytest

from tinydiffusion.cli import main
from tinydiffusion.cli.bench import load_bench
from tinydiffusion.config import get_preset


@pytest.fixture
def bench(monkeypatch):
    module = load_bench()
    # the metric is tested in test_evaluate.py; here a cheap stand-in keeps the smoke test to seconds
    monkeypatch.setattr(module, "_score", lambda images01: float(images01.mean()))
    return module


def test_quick_bench_writes_table_json_and_plot(bench, tmp_path):
    out = bench.run_bench(tmp_path / "bench", quick=True, recipes=["mnist"])
    md = (out / "bench.md").read_text()
    assert "## Throughput" in md and "## Quality vs wall-clock" in md and "| mnist |" in md
    results = json.loads((out / "bench.json").read_text())
    assert {"machine", "throughput", "quality", "floor", "scale", "n", "marks"} <= set(results)
    # the stand-in score is the mean pixel: noise (0.5) sits far above the mostly black digits
    scale = results["scale"]
    assert scale["uniform noise (n=32)"] > 2 * scale["real training digits (n=32)"] and "## The metric's scale" in md
    assert results["throughput"][0]["train_img_s"] > 0 and results["throughput"][0]["sample_img_nfe_s"] > 0
    assert [r["minutes"] for r in results["quality"] if r["n"] == results["n"]] == results["marks"]
    assert [(r["minutes"], r["n"]) for r in results["quality"] if r["n"] != results["n"]] == [(0.1, 16)]
    assert (out / "quality_vs_minutes.png").stat().st_size > 1000


def test_resume_reuses_the_finished_training_and_scores_only_missing_rows(bench, tmp_path, monkeypatch):
    out = bench.run_bench(tmp_path / "bench", quick=True, recipes=["mnist"])
    first = json.loads((out / "bench.json").read_text())["quality"]
    log = out / "quality.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()[:-1]))  # as if killed while scoring
    monkeypatch.setattr(bench, "_train", lambda *a: pytest.fail("a finished training was run again"))
    scored = []
    evaluate = bench._evaluate_ours
    monkeypatch.setattr(bench, "_evaluate_ours", lambda *a: scored.append(a[1:]) or evaluate(*a))
    again = json.loads((bench.run_bench(out, quick=True, recipes=["mnist"], resume=True) / "bench.json").read_text())
    assert scored == [(first[-1]["minutes"], first[-1]["n"], get_preset("mnist").sample.sampler, 10)]  # the preset's own sampler
    assert [r["train_steps"] for r in again["quality"]] == [r["train_steps"] for r in first]
    assert [r["fd_classifier"] for r in again["quality"]][:-1] == [r["fd_classifier"] for r in first][:-1]


def test_resume_needs_no_weights_for_a_recipe_whose_rows_are_all_scored(bench, tmp_path, monkeypatch):
    import shutil
    out = bench.run_bench(tmp_path / "bench", quick=True, recipes=["mnist"])
    first = json.loads((out / "bench.json").read_text())["quality"]
    shutil.rmtree(out / "runs" / "mnist")  # e.g. a peer benched on an earlier day, its weights since deleted
    monkeypatch.setattr(bench, "_train", lambda *a: pytest.fail("a fully scored recipe was trained again"))
    monkeypatch.setattr(bench, "_evaluate_ours", lambda *a: pytest.fail("a scored row was scored again"))
    again = json.loads((bench.run_bench(out, quick=True, recipes=["mnist"], resume=True) / "bench.json").read_text())
    assert again["quality"] == first


def test_quick_bench_with_the_diffusers_peer(bench, tmp_path):
    pytest.importorskip("diffusers")
    out = bench.run_bench(tmp_path / "bench", quick=True, recipes=["diffusers"])
    rows = json.loads((out / "bench.json").read_text())["quality"]
    assert {r["sampler"] for r in rows} == {"ddim-5", "ddpm-10"}


def test_bench_flags_are_checked(capsys):
    assert main(["bench", "--minutes", "two"]) == 2
    assert "--minutes takes comma-separated numbers" in capsys.readouterr().err


def test_quick_variants_write_their_table_and_profile(tmp_path):
    assert main(["bench", "--variants", "--quick", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "variants.md").read_text()
    assert "| preset: unet-patch" in md and "| fp32 | train.precision=fp32 |" in md
    assert "Self CPU" in md  # torch.profiler's operator table


def test_latent_call_cost_times_every_net_and_the_decoder(capsys):
    from benchmarks import latent_call_cost

    latent_call_cost.main(["--batch", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith("ms per call")]
    assert len(rows) == len(latent_call_cost.NETS) + 1 and rows[-1].startswith("ae-f4c4 decoder")
    assert out.count("best-case speed-up at 10 NFE") == len(latent_call_cost.NETS) - 1
