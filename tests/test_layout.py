"""The layout's import rules (README, "Layout"), checked on the package's own imports (ast: scripts/import_graph.py).

A rule is (who, what it must not import, why). Package paths are dotted prefixes: "tinydiffusion.models" covers
the folder and everything in it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

P = "tinydiffusion."
SPINE = [P + m for m in ("schedules", "paths", "process", "timesteps", "denoiser", "objectives", "samplers", "guidance",
                         "generate")]
FILES = [P + m for m in ("io", "checkpoint", "runs", "latent_space", "data", "conditioning.captions", "conditioning.text_encoder")]
EDGES = [P + m for m in ("models", "viz", "cli", "eval", "train", "experiments")]
RULES = [
    (SPINE, EDGES + FILES, "the math spine works on tensors only: no networks, pictures, commands or files"),
    ([P + "models"], SPINE + FILES + [P + m for m in ("viz", "cli", "eval", "train", "experiments")],
     "a network knows nothing about diffusion"),
    ([P + m for m in ("schedules", "paths", "process", "timesteps", "denoiser", "objectives", "samplers", "guidance",
                      "generate", "models", "conditioning", "data", "eval", "train", "viz", "experiments", "runs",
                      "checkpoint", "io", "config", "device", "registry", "errors")], [P + "cli"],
     "only __main__ imports the command line"),
    ([P + "eval"], [P + "train"], "evaluation never depends on a training loop"),
    ([P + "viz"], [P + "runs", P + "checkpoint"], "pictures take tensors, not run directories"),
]


def _under(module: str, prefixes: list[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def broken_rules(package: Path) -> list[str]:
    """One line per import that breaks a rule: 'file:line imports module (why)'."""
    out = []
    for importer, imported, line in import_graph.import_edges(package):
        for who, banned, why in RULES:
            if _under(importer, who) and _under(imported, banned):
                path = importer.replace(".", "/")
                out.append(f"{path}:{line} imports {imported} ({why})")
    return out


def test_the_package_keeps_the_import_rules():
    problems = broken_rules(ROOT / "src" / "tinydiffusion")
    assert not problems, "\n".join(problems)


def test_the_package_has_no_import_circles():
    arrows = {(a, b) for a, b, _ in import_graph.import_edges(ROOT / "src" / "tinydiffusion")}
    assert import_graph.circles(arrows) == []


@pytest.mark.parametrize("path, code, expected", [
    ("samplers.py", "from .models import build_model\n", "tinydiffusion/samplers:1 imports tinydiffusion.models"),
    ("models/unet.py", "def f():\n    from ..samplers import get_sampler\n",
     "tinydiffusion/models/unet:2 imports tinydiffusion.samplers"),
    ("eval/evaluate.py", "import tinydiffusion.train.loop\n", "tinydiffusion/eval/evaluate:1 imports tinydiffusion.train"),
    ("viz/figures.py", "from ..runs import load_run\n", "tinydiffusion/viz/figures:1 imports tinydiffusion.runs"),
    ("experiments/nfe.py", "from ..cli.common import add_sampling_args\n",
     "tinydiffusion/experiments/nfe:1 imports tinydiffusion.cli"),
])
def test_a_broken_rule_is_named_with_its_file_line_and_import(tmp_path, path, code, expected):
    """The checker on a small package that breaks one rule on purpose."""
    pkg = tmp_path / "tinydiffusion"
    for module in ("__init__", "samplers", "runs", "models/__init__", "models/unet", "eval/__init__",
                   "eval/evaluate", "train/__init__", "train/loop", "viz/__init__", "viz/figures", "cli/__init__",
                   "cli/common", "experiments/__init__", "experiments/nfe"):
        (pkg / f"{module}.py").parent.mkdir(parents=True, exist_ok=True)
        (pkg / f"{module}.py").write_text("")
    assert broken_rules(pkg) == []
    (pkg / path).write_text(code)
    problems = broken_rules(pkg)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_circle_is_found(tmp_path):
    pkg = tmp_path / "tinydiffusion"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    arrows = {(a, b) for a, b, _ in import_graph.import_edges(pkg)}
    assert import_graph.circles(arrows) == [["tinydiffusion.a", "tinydiffusion.b"]]
