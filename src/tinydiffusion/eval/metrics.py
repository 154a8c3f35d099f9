"""Sample-quality math on feature vectors (no networks here): the Fréchet distance between Gaussian fits,
k-NN manifold precision / recall / density / coverage, and the normalised entropy of a class histogram.
Everything is computed in float64, so results depend only on the features."""
from __future__ import annotations

import math

import numpy as np
import torch


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)  # arrays, lists or tensors -> float64 tensor (a copy if cast)


def gaussian_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = _f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {tuple(f.shape)}")
    return f.mean(dim=0), torch.cov(f.T)  # (N, D) -> (D, N): torch.cov takes variables as rows


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix; round-off negative eigenvalues are clipped to 0."""
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def _trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> float:
    """tr((S1 S2)^1/2) = sum of sqrt(eigenvalues) of the symmetric PSD matrix F^T S2 F for any factor S1 = F F^T
    (same non-zero eigenvalues as S1 S2). F is a Cholesky factor when S1 or S2 is definite (the trace is symmetric
    in them), else the symmetric square root; eigenvalues only, no eigenvectors, so 2048-d takes seconds."""
    for a, b in ((s2, s1), (s1, s2)):
        f, info = torch.linalg.cholesky_ex(a)
        if info.item() == 0:
            break
    else:  # both singular (fewer samples than dimensions, dead units)
        f, b = _sqrt_psd(s1), s2
    inner = f.T @ b @ f
    return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum().item()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6; Dowson & Landau 1982):
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), in float64 with exact symmetric eigenvalue problems."""
    mu1, mu2, s1, s2 = _f64(mu1), _f64(mu2), _f64(sigma1), _f64(sigma2)
    diff = mu1 - mu2
    d2 = diff @ diff + s1.trace() + s2.trace() - 2 * _trace_sqrt_product(s1, s2)
    return max(float(d2), 0.0)  # a tiny negative is round-off of a zero distance


def knn_radii(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of x (N, D) to its k-th nearest other row: the radius of its k-NN ball."""
    x = _f64(x)
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {len(x)}")
    out = []
    for s in range(0, len(x), chunk):
        d = torch.cdist(x[s:s + chunk], x)  # (c, N); each row holds its own point at distance 0
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def prdc(real, fake, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision and recall of k-NN manifolds (Kynkäänniemi et al. 2019, eq. 1-2) and density and coverage
    (Naeem et al. 2020, eq. 3-4) of fake features (M, D) against real features (N, D). Balls are closed
    (distance <= radius) for all four, as the papers write them."""
    real, fake = _f64(real), _f64(fake)
    r_real, r_fake = knn_radii(real, k, chunk), knn_radii(fake, k, chunk)  # (N,), (M,)
    balls_hit = torch.zeros(len(fake), dtype=torch.float64)  # per fake: how many real balls contain it
    in_fake_manifold = torch.zeros(len(real), dtype=torch.bool)  # per real: inside some fake ball
    nearest_fake = torch.full((len(real),), math.inf, dtype=torch.float64)  # per real: distance to nearest fake
    for s in range(0, len(fake), chunk):
        d = torch.cdist(fake[s:s + chunk], real)  # (c, N)
        balls_hit[s:s + chunk] = (d <= r_real[None, :]).sum(dim=1)
        in_fake_manifold |= (d <= r_fake[s:s + chunk, None]).any(dim=0)
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    return dict(precision=(balls_hit > 0).double().mean().item(),
                recall=in_fake_manifold.double().mean().item(),
                density=(balls_hit.sum() / (k * len(fake))).item(),
                coverage=(nearest_fake <= r_real).double().mean().item())


def normalised_entropy(counts) -> float:
    """Shannon entropy of a histogram divided by log(number of bins): 1 = uniform, 0 = a single bin."""
    c = np.asarray(counts, dtype=np.float64)
    if len(c) < 2 or c.sum() <= 0:
        return 0.0
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(c))) + 0.0  # + 0.0 turns -0.0 (one bin) into 0.0
