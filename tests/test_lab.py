"""The lab (tinydiffusion.lab): its endpoints in-process, and the pages in a real browser (Debian's chromium)."""
from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tinydiffusion.cli.main import main
from tinydiffusion.lab.server import Lab, make_server

ROOT = Path(__file__).resolve().parents[1]


def _png_url(a) -> str:
    import base64
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


BLANK = _png_url([[0] * 56] * 56)  # a drawing with no strokes
CLASS_RUN = ROOT / "tests" / "fixtures" / "runs" / "class-eps"  # a tiny class-conditional run, T = 20


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """`tinydiffusion course` on a tiny model and a ~1 s budget (about 10 s in all)."""
    from conftest import TINY

    from tinydiffusion.experiments.course import run_course

    return run_course(tmp_path_factory.mktemp("course"), 0.02, n=16, sample_steps=5, nfe_n=8, lesson_steps=2,
                      overrides=tuple(TINY), device="cpu")


@pytest.fixture(scope="module")
def lab(tiny_run, control_run, course):
    server = make_server(Lab([tiny_run, CLASS_RUN, control_run], course), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def events(url: str) -> list[tuple[str, dict]]:
    """The server-sent events of a job until its last one (done, error or cancelled)."""
    out, kind = [], None
    with urllib.request.urlopen(url, timeout=120) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        for line in r:
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
                if kind != "frame":
                    return out
    return out


def test_forward_endpoint_keeps_the_noise_and_moves_alpha_bar(lab):
    a = call(f"{lab}/api/forward?path=ddpm-linear&T=1000&t=10&seed=3")[1]
    b = call(f"{lab}/api/forward?path=ddpm-linear&T=1000&t=900&seed=3")[1]
    assert a["eps"] == b["eps"] and a["x0"] == b["x0"] and a["x_t"] != b["x_t"]  # same eps, same digit
    assert 1 > a["alpha_bar"] > 0.99 > 0.01 > b["alpha_bar"] > 0  # linear betas: alpha_bar_10 ~ 0.998
    assert a["t"] == pytest.approx(11 / 1000)  # step k -> t = (k + 1) / T
    assert b["snr"] == pytest.approx(b["alpha_bar"] / (1 - b["alpha_bar"]))
    flow = call(f"{lab}/api/forward?path=flow&t=0.25")[1]
    assert (flow["alpha"], flow["sigma"]) == pytest.approx((0.75, 0.25)) and not flow["variance_preserving"]
    assert call(f"{lab}/api/forward?path=flow&t=0")[1]["snr"] is None  # infinite SNR at the data end


def test_forward_endpoint_takes_an_uploaded_picture(lab):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    status, v = call(f"{lab}/api/forward", dict(path="ddpm-cosine", T=100, t=0, image=url))
    assert status == 200 and v["x0"] != call(f"{lab}/api/forward?path=ddpm-cosine&T=100&t=0")[1]["x0"]
    assert call(f"{lab}/api/forward", dict(image="data:image/png;base64,bm90IGFuIGltYWdl"))[0] == 400


def test_curves_endpoint_has_one_point_per_step_of_a_small_table(lab):
    c = call(f"{lab}/api/curves?path=ddpm-cosine&T=50")[1]
    assert c["x"] == list(range(50)) and len(c["alpha_bar"]) == 50
    assert all(x > y for x, y in zip(c["alpha_bar"], c["alpha_bar"][1:]))  # alpha_bar falls with t
    assert "flow" in c["paths"]


@pytest.mark.parametrize("url, body, status, words", [
    ("/api/forward?path=nope", None, 400, "Unknown path 'nope'"),
    ("/api/forward?T=0", None, 400, "T must be between 2"),
    ("/api/forward?path=ddpm-linear&T=100&t=100", None, 400, "t must be between 0 and 99"),
    ("/api/forward?path=flow&t=1.5", None, 400, "t must be in [0, 1]"),
    ("/api/forward?index=99999999", None, 400, "index must be between"),
    ("/api/run?run=ghost", None, 404, "Unknown run 'ghost'"),
    ("/api/runfile?run=class-eps&file=../config.json", None, 400, "samples/*.png"),
    ("/api/events?job=nope", None, 404, "No sampling job"),
    ("/nowhere", None, 404, "No page /nowhere"),
    ("/api/sample", dict(run="ghost"), 404, "Unknown run 'ghost'"),
    ("/api/sample", dict(run="run", steps=0), 400, "steps must be between 1"),
    ("/api/sample", dict(run="run", n=100000), 400, "n must be between 1 and 64"),
    ("/api/sample", dict(run="run", sampler="magic"), 400, "Unknown sampler 'magic'"),
    ("/api/sample", dict(run="run", steps="five"), 400, "steps must be a whole number"),
    ("/api/sample", dict(run="class-eps", **{"class": 12}), 400, "Class 12 is out of range"),
    ("/api/sample", dict(run="run", **{"class": 3}), 400, "unconditional"),
    ("/api/sample", dict(run="run", steps=50), 400, "steps"),  # more steps than the run's T = 20
    ("/api/sample", dict(run="run", control="digit"), 400, "not trained with control maps"),
    ("/api/sample", dict(run="ctrl", control="magic"), 400, "control must be 'digit'"),
    ("/api/sample", dict(run="ctrl", control_digit=10**6), 400, "control_digit must be between 0 and 9999"),
    ("/api/sample", dict(run="ctrl", control="drawn"), 400, "Draw a control map first"),
    ("/api/sample", dict(run="ctrl", control="drawn", control_image="data:image/png;base64,AAAA"), 400,
     "not an image"),
    ("/api/sample", dict(run="ctrl", control="drawn", control_image=BLANK), 400, "map is empty"),
    ("/api/sample", dict(run="ctrl", control_scale=-1), 400, "control_scale must be between 0 and 10"),
    ("/api/sample", dict(run="ctrl", control_scale="nan"), 400, "control_scale must be a number"),
    ("/api/sample", dict(run="ctrl", drop_control=True), 400, "needs a guidance scale"),
])
def test_bad_requests_get_a_4xx_and_one_sentence(lab, url, body, status, words):
    got, answer = call(lab + url, body)
    assert got == status and words in answer["error"], answer
    assert "Traceback" not in answer["error"]
    assert call(f"{lab}/api/runs")[0] == 200  # and the server keeps serving


def test_sampling_streams_one_frame_per_step_then_the_grid(lab):
    status, job = call(f"{lab}/api/sample", dict(run="run", steps=5, n=4, sampler="ddim", client="a"))
    assert status == 200 and job["steps"] == 5
    got = events(f"{lab}/api/events?job={job['job']}")
    frames = [d for k, d in got if k == "frame"]
    assert len(frames) == 5 and [f["i"] for f in frames] == list(range(5))
    assert [f["t"] for f in frames] == sorted((f["t"] for f in frames), reverse=True)  # noise -> data
    kind, done = got[-1]
    assert kind == "done" and done["n"] == 4 and done["grid"].startswith("data:image/png;base64,")
    assert done["ms_per_image"] > 0


def test_a_control_run_samples_from_a_test_digits_map_and_says_how_closely_it_follows(lab, control_run):
    from tinydiffusion.config import load_config
    from tinydiffusion.data import load_dataset, to_model_range
    from tinydiffusion.lab.images import grid_url
    from tinydiffusion.conditioning.control import control_map

    runs = {r["name"]: r for r in call(f"{lab}/api/runs")[1]}
    assert runs["ctrl"]["control"]["kind"] == "edges" and runs["run"]["control"] is None
    status, job = call(f"{lab}/api/sample", dict(run="ctrl", steps=3, n=2, control="digit", control_digit=7,
                                                 control_scale=0.5, client="ctl"))
    assert status == 200, job
    digit = to_model_range(load_dataset("mnist", "test").images[7:8])  # the map is test digit 7's edges
    assert job["control_map"] == grid_url(control_map(load_config(control_run / "config.json").control.kind, digit) * 2 - 1)
    assert job["control_source"] == grid_url(digit)
    got = events(f"{lab}/api/events?job={job['job']}")
    kind, done = got[-1]
    assert kind == "done" and [k for k, _ in got].count("frame") == 3
    assert 0 <= done["fidelity"]["f1"] <= 1 and 0 <= done["fidelity"]["label_accuracy"] <= 1
    assert done["fidelity"]["n"] == 2


def test_a_drawn_map_is_resized_and_binarised_as_the_command_line_does(lab):
    import numpy as np
    import torch

    from tinydiffusion.lab.control import drawn_map

    a = np.zeros((56, 56))
    a[10:46, 26:30] = 255  # a vertical bar, four pixels wide at twice the size
    maps = drawn_map(_png_url(a), (28, 28))
    assert maps.shape == (1, 1, 28, 28) and set(maps.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(maps[0, 0].nonzero()[:, 1].unique(), torch.tensor([13, 14]))  # columns 26-29 -> 13-14
    assert torch.equal(drawn_map(_png_url(255 - a), (28, 28)), maps)  # dark strokes on paper: the same map
    status, job = call(f"{lab}/api/sample", dict(run="ctrl", steps=2, n=1, control="drawn", control_image=_png_url(a),
                                                 client="draw"))
    assert status == 200 and "control_source" not in job, job
    kind, done = events(f"{lab}/api/events?job={job['job']}")[-1]
    assert kind == "done" and "label_accuracy" not in done["fidelity"]


def test_a_new_request_cancels_the_old_one_of_the_same_client(lab):
    first = call(f"{lab}/api/sample", dict(run="run", steps=20, n=4, client="b"))[1]
    second = call(f"{lab}/api/sample", dict(run="run", steps=3, n=2, client="b"))[1]
    assert call(f"{lab}/api/events?job={first['job']}")[0] == 404  # replaced: no longer listed
    got = events(f"{lab}/api/events?job={second['job']}")
    assert [k for k, _ in got].count("frame") == 3 and got[-1][0] == "done"


def test_runs_endpoints_give_config_loss_curve_and_metrics(lab):
    runs = {r["name"]: r for r in call(f"{lab}/api/runs")[1]}
    assert runs["class-eps"]["num_classes"] == 10 and runs["run"]["num_classes"] == 0
    d = call(f"{lab}/api/run?run=class-eps")[1]
    assert d["config"]["diffusion"]["T"] == 20 and d["loss_png"].startswith("data:image/png")
    assert [r["step"] for r in d["rows"]] == [2, 4, 6]


def test_course_writes_one_page_with_the_checkpoints_and_every_picture(course):
    import re

    page = (course / "course.html").read_text()
    assert page.count("PASS") + page.count("FAIL") == 3  # the three checkpoints, each judged
    pictures = re.findall(r"<img src='([^']+)'|<img src=\"([^\"]+)\"", page)
    files = [a or b for a, b in pictures]
    assert {"schedule.png", "forward.png", "diagnostic.png", "trajectory.png", "checkpoints/loss.png",
            "nfe/quality_vs_nfe.png", "schedules/samples_linear.png", "timesteps/samples_T=200.png",
            "vae-vs-ddpm/samples_vae.png"} <= set(files)
    assert all((course / d / "report.md").is_file() for d in ("timing", "schedules", "timesteps", "vae-vs-ddpm"))
    assert all((course / f).is_file() for f in files)


def test_course_report_is_served_from_its_folder_only(lab):
    assert call(f"{lab}/api/course")[1]["ready"]
    with urllib.request.urlopen(f"{lab}/course/report/course.html") as r:
        assert b"The three checkpoints" in r.read()
    assert call(f"{lab}/course/report/../../etc/passwd")[0] == 404


def test_course_command_refuses_an_empty_budget(capsys):
    assert main(["course", "--minutes", "0"]) == 2
    assert "--minutes must be positive" in capsys.readouterr().err


def test_lab_command_says_one_sentence_for_a_bad_run(tmp_path, capsys):
    assert main(["lab", "--run", str(tmp_path), "--port", "0"]) == 2
    assert "is not a run directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the browser tests save their screenshots: a temporary folder, or $LAB_SCREENSHOTS (the README's
    pictures: LAB_SCREENSHOTS=docs/lab .venv/bin/python -m pytest -q tests/test_lab.py -k browser)."""
    import os

    folder = Path(os.environ.get("LAB_SCREENSHOTS") or tmp_path_factory.mktemp("lab_screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(lab):
    pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (as root: apt-get install chromium; scripts/install.sh "
                    "does it when run as root)")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1280, "height": 820})
        yield pg
        browser.close()


def test_browser_forward_page_moves_t_and_the_picture(lab, page, shots):
    page.goto(f"{lab}/forward")
    page.wait_for_selector("#alphabar b")
    before, picture = page.inner_text("#alphabar"), page.get_attribute("#xt", "src")
    page.fill("#t", "50")  # a range input: fill sets its value and fires input
    page.wait_for_function("(old) => document.querySelector('#alphabar').innerText !== old", arg=before)
    assert page.get_attribute("#xt", "src") != picture
    page.fill("#t", "250")
    page.wait_for_function("() => document.querySelector('#tvalue').innerText.startsWith('k = 250')")
    page.screenshot(path=str(shots / "forward.png"), full_page=True)
    page.fill("#T", "0")
    page.dispatch_event("#T", "change")
    page.wait_for_selector("#error:visible")
    assert "T must be between 2" in page.inner_text("#error")


def test_browser_sample_page_streams_five_steps_to_a_grid(lab, page, shots):
    page.goto(f"{lab}/sample?run=class-eps")
    page.wait_for_selector("#sampler option", state="attached")
    page.fill("#steps", "5")
    page.fill("#n", "16")
    page.select_option("#class", "3")
    page.click("#go")
    page.wait_for_selector("#final[src^='data:image/png']", timeout=60_000)
    assert "ms per image" in page.inner_text("#status")
    page.fill("#scrub", "1")
    assert page.inner_text("#scrubvalue") == "step 2 / 5"
    page.screenshot(path=str(shots / "sample.png"), full_page=True)
    page.fill("#steps", "0")
    page.click("#go")
    page.wait_for_selector("#error:visible")
    assert "steps must be between 1" in page.inner_text("#error")


def test_browser_sample_page_takes_a_drawn_control_map(lab, page, shots):
    page.goto(f"{lab}/sample?run=ctrl")
    page.wait_for_selector("#controlrow:visible")
    assert "edges" in page.inner_text("#controltext")
    page.select_option("#controlsource", "drawn")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 70, box["y"] + 20)
    page.mouse.down()
    for dx, dy in ((70, 120), (40, 90), (100, 90)):
        page.mouse.move(box["x"] + dx, box["y"] + dy, steps=8)
    page.mouse.up()
    page.fill("#steps", "5")
    page.fill("#n", "16")
    page.click("#go")
    page.wait_for_selector("#final[src^='data:image/png']", timeout=60_000)
    assert page.get_attribute("#controlmap", "src").startswith("data:image/png")
    assert "follow the map: F1" in page.inner_text("#status")
    page.screenshot(path=str(shots / "sample-control.png"), full_page=True)
    page.click("#clearpad")
    page.click("#go")
    page.wait_for_selector("#error:visible")
    assert "map is empty" in page.inner_text("#error")


def test_browser_runs_and_course_pages(lab, page, shots):
    page.goto(f"{lab}/runs")
    page.select_option("#run", "class-eps")
    page.wait_for_selector("#metrics tr:nth-child(4)")  # a header and three logged rows
    page.wait_for_selector("#loss[src^='data:image/png']")
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    page.goto(f"{lab}/course")
    page.wait_for_selector("#report:visible")
    page.frame_locator("#report").locator("img[alt='samples']").wait_for()
    page.screenshot(path=str(shots / "course.png"))


def test_a_replaced_job_stops_at_its_next_step(monkeypatch):
    """Jobs on a stand-in sampler that takes 0.05 s a step: the old job ends 'cancelled' long before its 100 steps."""
    import time

    import torch

    from tinydiffusion.lab import sampling

    def slow(run_dir, n, callback=None, **kw):
        for i in range(kw["steps"]):
            time.sleep(0.05)
            x = torch.zeros(n, 1, 4, 4)
            callback(dict(i=i, t=1 - i / kw["steps"], x=x, x0_hat=x))
        return torch.zeros(n, 1, 4, 4), None

    monkeypatch.setattr(sampling, "sample_conditional", slow)
    jobs = sampling.Jobs()
    args = dict(n=1, steps=100, sampler="ddim", seed=0, guidance=None, labels=None, prompts=None)
    old = jobs.start("c", Path("."), args)
    while old.events.qsize() < 2:
        time.sleep(0.01)
    new = jobs.start("c", Path("."), {**args, "steps": 2})
    assert old.finished.wait(5) and new.finished.wait(5)
    kinds = [old.events.get()[0] for _ in range(old.events.qsize())]
    assert kinds[-1] == "cancelled" and kinds.count("frame") < 10
    assert [new.events.get()[0] for _ in range(3)] == ["frame", "frame", "done"]
    other = jobs.start("d", Path("."), {**args, "steps": 1})  # another client's job is not touched
    assert other.finished.wait(5) and not new.cancel.is_set()
