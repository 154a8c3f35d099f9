"""conditioning/control.py and eval/fidelity.py: each control map on tiny synthetic images (a square's edges, a line's
skeleton, a blob's 7x7 sketch), drawn maps resized and binarised, and the fidelity metric against closed cases."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from tinydiffusion.conditioning.control import control_map, edges, map_from_image, sketch, skeleton
from tinydiffusion.errors import UserError
from tinydiffusion.eval.fidelity import fidelity, map_agreement


def canvas(h: int, w: int) -> torch.Tensor:
    return -torch.ones(1, 1, h, w)  # black, in [-1, 1]


def test_edges_of_a_square_are_its_outline_within_one_pixel():
    x = canvas(16, 16)
    x[..., 4:12, 4:12] = 1  # a white 8x8 square
    e = edges(x)[0, 0]
    assert e.shape == (16, 16) and set(e.unique().tolist()) <= {0.0, 1.0}
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 4:12] = True
    ring = torch.zeros(16, 16, dtype=torch.bool)  # pixels within one pixel of the square's boundary
    ring[3:13, 3:13] = True
    ring[6:10, 6:10] = False
    assert e[~ring].sum() == 0, "an edge far from the boundary"
    assert e[5:11, 5:11].sum() == 0, "the flat interior has no edges"
    for i in range(5, 11):  # every side's boundary is found, on the inner and the outer pixel
        assert e[3, i] and e[4, i] and e[11, i] and e[12, i] and e[i, 3] and e[i, 4] and e[i, 11] and e[i, 12]
    assert edges(canvas(16, 16)).sum() == 0 and edges(-canvas(16, 16)).sum() == 0  # flat images: no edges


def test_skeleton_of_a_thick_line_is_its_middle_row():
    x = canvas(9, 16)
    x[..., 3:6, 2:14] = 1  # a horizontal bar 3 pixels thick, 12 long
    s = skeleton(x)[0, 0]
    assert s[4].sum() >= 8, "the skeleton runs along the middle row"
    assert s.sum() == s[4].sum(), "and nowhere else: one pixel thick"
    assert (s[4].nonzero().flatten() >= 2).all() and (s[4].nonzero().flatten() < 14).all()
    assert (s.nonzero()[:, 1].diff() == 1).all(), "without gaps"


def test_skeleton_keeps_a_one_pixel_line_and_a_diagonal():
    x = canvas(10, 10)
    x[..., 5, 1:9] = 1
    assert torch.equal(skeleton(x), (x > 0).float())
    d = canvas(10, 10)
    for i in range(1, 9):
        d[..., i, i] = 1
    assert torch.equal(skeleton(d), (d > 0).float())


def test_sketch_marks_the_occupied_cells_of_a_7x7_grid():
    x = canvas(28, 28)
    x[..., 0:8, 0:8] = 1  # exactly the top-left 2x2 cells (4x4 pixels each)
    x[..., 20, 20] = 1  # one pixel of ink is below the occupancy share of its cell
    s = sketch(x)[0, 0]
    assert s.shape == (28, 28)
    cells = s[::4, ::4]  # (7, 7): one pixel per cell
    want = torch.zeros(7, 7)
    want[:2, :2] = 1
    assert torch.equal(cells, want)
    assert torch.equal(s, want.repeat_interleave(4, 0).repeat_interleave(4, 1))


def test_maps_take_batches_and_name_the_unknown_kind():
    x = canvas(28, 28).repeat(3, 1, 1, 1)
    assert control_map("edges", x).shape == (3, 1, 28, 28)
    with pytest.raises(UserError, match="control map"):
        control_map("depth", x)
    with pytest.raises(UserError, match=r"\(B, C, H, W\)"):
        edges(torch.zeros(28, 28))


def test_a_drawn_map_of_the_wrong_size_is_resized_and_binarised(tmp_path):
    from tinydiffusion.cli.control import read_map

    big = torch.zeros(1, 56, 56)
    big[:, 8:24, 8:24] = 0.9  # a light square on black at twice the size
    m = map_from_image(big, (28, 28))
    assert m.shape == (1, 1, 28, 28) and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[0, 0, 4:12, 4:12].all() and m.sum() == 64
    paper = Image.new("L", (40, 40), 255)  # dark strokes on white paper, as drawn in an editor
    paper.paste(0, (10, 10, 30, 30))
    paper.save(tmp_path / "drawn.png")
    x = read_map(tmp_path / "drawn.png")
    assert x.shape == (1, 40, 40) and x[0, 20, 20] == 1 and x[0, 0, 0] == 0  # inverted: ink bright
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match="is not an image"):
        read_map(tmp_path / "notes.png")


def test_fidelity_is_one_for_the_source_and_falls_as_the_sample_shifts():
    x = canvas(28, 28)
    x[..., 6:22, 9:13] = 1  # a vertical stroke
    x[..., 6:10, 9:20] = 1  # and a bar: a "7"
    maps = edges(x)
    f1 = [map_agreement(edges(torch.roll(x, (k, k), dims=(-2, -1))), maps)["f1"].item() for k in range(6)]
    assert f1[0] == 1.0 and f1[1] == 1.0  # the source, and one pixel off: inside the tolerance
    assert all(a > b for a, b in zip(f1[1:], f1[2:])), f1  # then falling with every pixel of shift
    assert f1[-1] < 0.5
    exact = map_agreement(edges(torch.roll(x, 1, dims=-1)), maps, tolerance=0)["f1"].item()
    assert exact < 1.0
    assert fidelity(x, maps, "edges")["iou"] == 1.0


def test_map_agreement_matches_hand_counts():
    target = torch.zeros(1, 1, 5, 5)
    target[..., 2, :] = 1  # 5 pixels
    pred = torch.zeros(1, 1, 5, 5)
    pred[..., 2, :3] = 1  # 3 pixels on it
    pred[..., 0, 4] = 1  # 1 pixel two rows away
    s = map_agreement(pred, target)
    assert s["precision"].item() == pytest.approx(3 / 4)
    assert s["recall"].item() == pytest.approx(4 / 5)  # pixel (2, 3) is within one pixel of pred's (2, 2)
    assert s["f1"].item() == pytest.approx(2 * 0.75 * 0.8 / 1.55)
    tp = (3 + 4) / 2
    assert s["iou"].item() == pytest.approx(tp / (tp + 1 + 1))
    empty = torch.zeros(1, 1, 5, 5)
    assert map_agreement(empty, empty)["f1"].item() == 1.0 and map_agreement(pred, empty)["f1"].item() == 0.0


def test_label_accuracy_reads_real_test_digits_as_their_class():
    from tinydiffusion.data import load_dataset, to_model_range

    test = load_dataset("mnist", "test")
    x, y = to_model_range(test.images[:64]), test.labels[:64]
    right = fidelity(x, edges(x), "edges", y)
    wrong = fidelity(x, edges(x), "edges", (y + 1) % 10)
    assert right["f1"] == 1.0 and right["label_accuracy"] >= 0.95 and wrong["label_accuracy"] <= 0.05
