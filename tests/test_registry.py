"""registry.py: one shape for every named kind; `tinydiffusion list KIND` lists each of them from it."""
from __future__ import annotations

import pytest

from tinydiffusion.cli import main
from tinydiffusion.cli.lists import KINDS, registry
from tinydiffusion.errors import UserError
from tinydiffusion.registry import Registry


def test_a_registry_keeps_order_texts_and_names_every_choice_in_its_error():
    r = Registry("widget", " (see `tinydiffusion list widgets`)")

    @r.register("b")
    def make_b():
        """The b widget, first line.

        More words."""

    r.add("a", 42, "the answer")
    assert list(r) == ["b", "a"] and len(r) == 2 and "a" in r and "c" not in r
    assert r.get("a") == 42 and r["b"] is make_b and r.check("a") == "a"
    assert r.descriptions() == {"b": "The b widget, first line.", "a": "the answer"}
    with pytest.raises(UserError) as e:
        r.get("c")
    assert str(e.value) == "Unknown widget 'c'; choose one of: b, a (see `tinydiffusion list widgets`)."
    with pytest.raises(ValueError, match="twice"):
        r.add("a", 1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_listed_with_a_description_for_every_name(kind, capsys):
    assert main(["list", kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list(registry(kind))
    assert len(lines) == len(names) >= 2
    for line, name in zip(lines, names):
        assert line.startswith(name + " ") and line[len(name):].strip(), line  # every name has a description


def test_presets_command_lists_the_preset_registry(capsys):
    assert main(["presets"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(registry("presets"))


@pytest.mark.parametrize("kind, name", [("models", "unet-tiny"), ("samplers", "euler-a"), ("schedules", "sigmoid"),
                                        ("predictions", "score"), ("spacings", "leading"), ("datasets", "svhn"),
                                        ("presets", "imagenet"), ("precisions", "fp8"), ("optimizers", "sgd")])
def test_an_unknown_name_of_every_kind_gets_the_one_sentence(kind, name):
    with pytest.raises(UserError, match=f"^Unknown .*'{name}'; choose one of: "):
        registry(kind).get(name)
