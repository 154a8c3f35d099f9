"""How closely samples follow their control maps: the same map computed on each sample against the map it was given,
as F1 and IoU of the map's pixels with a tolerance of one pixel (the boundary-F1 convention of edge detection,
Martin et al. 2004, BSDS: a predicted pixel matches when a true one lies within the tolerance, and vice versa),
plus label accuracy under the project's classifier when each map comes from a digit of known class."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conditioning.control import control_map
from .features import classifier_outputs, load_classifier


def _near(m: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Pixels within `tolerance` (Chebyshev distance) of an ink pixel of m (B, 1, H, W) in {0, 1}."""
    k = 2 * tolerance + 1
    return F.max_pool2d(m, k, stride=1, padding=tolerance) if tolerance else m


def map_agreement(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1) -> dict[str, torch.Tensor]:
    """Per image (B,): precision = share of pred's pixels within `tolerance` of a target pixel, recall = share of
    target's pixels within `tolerance` of a pred pixel, F1 = 2PR / (P + R), and IoU = TP / (TP + FP + FN) with
    TP the mean of the two matched counts. Two empty maps agree (1); one empty map against another does not (0)."""
    pred, target = (pred > 0.5).float(), (target > 0.5).float()
    n_pred, n_target = pred.flatten(1).sum(1), target.flatten(1).sum(1)  # (B,)
    hit_pred = (pred * _near(target, tolerance)).flatten(1).sum(1)  # pred pixels near the target
    hit_target = (target * _near(pred, tolerance)).flatten(1).sum(1)  # target pixels near pred
    precision = torch.where(n_pred > 0, hit_pred / n_pred.clamp(min=1), (n_target == 0).float())
    recall = torch.where(n_target > 0, hit_target / n_target.clamp(min=1), (n_pred == 0).float())
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(precision))
    tp = (hit_pred + hit_target) / 2
    union = tp + (n_pred - hit_pred) + (n_target - hit_target)
    iou = torch.where(union > 0, tp / union.clamp(min=1e-12), torch.ones_like(tp))
    return dict(precision=precision, recall=recall, f1=f1, iou=iou)


@torch.no_grad()
def fidelity(samples: torch.Tensor, maps: torch.Tensor, kind: str, labels: torch.Tensor | None = None,
             dataset: str = "mnist", tolerance: int = 1) -> dict[str, float]:
    """Mean F1, IoU, precision, recall of control_map(kind, samples) against maps (B, 1, H, W) in {0, 1}, for
    samples (B, C, H, W) in [-1, 1], and f1_exact (F1 without tolerance); with labels (B,), also label_accuracy: the share the classifier reads as the
    digit the map came from."""
    made = control_map(kind, samples.float())
    out = {k: float(v.mean()) for k, v in map_agreement(made, maps.float(), tolerance).items()}
    out["f1_exact"] = float(map_agreement(made, maps.float(), 0)["f1"].mean())  # no tolerance: the strict reading
    if labels is not None:
        net, _ = load_classifier(dataset)
        _, pred = classifier_outputs(net, ((samples.float().cpu() + 1) / 2).clamp(0, 1))
        out["label_accuracy"] = float((pred == labels.cpu()).double().mean())
    out["n"] = len(samples)
    return out
