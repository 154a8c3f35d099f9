"""`tinydiffusion data info NAME_OR_PATH`: what a dataset holds (size, shape, channels, values, labels) and a grid."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError


def add_data(sub):
    p = sub.add_parser("data", help="inspect a dataset (a registered name or a path)")
    data = p.add_subparsers(dest="data_command", required=True)
    q = data.add_parser("info", help="print size, shape, channels, value range and labels; write a grid")
    q.add_argument("name", metavar="NAME_OR_PATH", help="a dataset name (see `tinydiffusion list datasets`) "
                   "or the path of an image folder, .npz file, CIFAR-10 or IDX folder")
    q.add_argument("--path", default="", help="where a named dataset lives (like --set data.path=...)")
    q.add_argument("--split", default="train", choices=["train", "test"])
    q.add_argument("--image-size", type=int, default=0, help="fit to this size, as data.image_size (0 = native)")
    q.add_argument("--channels", type=int, default=0, help="1 or 3, as data.channels (0 = as stored)")
    q.add_argument("--n", type=int, default=64, help="images in the grid")
    q.add_argument("--autoencoder", type=Path, metavar="RUN",
                   help="an autoencoder run: print the split's latent health (standardised mean and std per channel, "
                        "round-trip error)")
    q.add_argument("--out", type=Path, help="the grid's PNG file (default runs/data/NAME-SPLIT.png)")
    q.set_defaults(func=run_info)


def describe(ds) -> list[str]:
    """The lines `data info` prints: size, shape, value range and per-channel statistics, label counts."""
    C, H, W = ds.shape
    # Statistics on at most 10k images, so a 50k x 3 x 32 x 32 set never needs a float copy of it all.
    sample = ds.images[torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:10_000]].float() / 255
    mean, std = sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3))
    lines = [f"images    {len(ds)} x {C} x {H} x {W} ({'RGB' if C == 3 else 'grayscale'}), stored as uint8",
             f"values    {int(ds.images.min())}..{int(ds.images.max())}; in [0, 1] per channel: mean "
             f"{', '.join(f'{m:.3f}' for m in mean)}, std {', '.join(f'{s:.3f}' for s in std)}"]
    if ds.labels is None:
        lines.append("labels    none (unconditional only)")
    else:
        counts = torch.bincount(ds.labels, minlength=ds.num_classes).tolist()
        lines.append(f"labels    {ds.num_classes} classes: "
                     + ", ".join(f"{name} {n}" for name, n in zip(ds.class_names, counts)))
    return lines


def pick(ds, n: int) -> tuple[torch.Tensor, int]:
    """(indices, images per row): with labels, one row per class (up to 16 classes), else a seeded random draw."""
    g = torch.Generator().manual_seed(0)
    if ds.labels is not None and 1 < ds.num_classes <= 16:
        per_class = max(1, n // ds.num_classes)
        rows = [torch.nonzero(ds.labels == k).flatten() for k in range(ds.num_classes)]
        rows = [r[torch.randperm(len(r), generator=g)[:per_class]] for r in rows if len(r)]
        if all(len(r) == per_class for r in rows):
            return torch.cat(rows), per_class
    return torch.randperm(len(ds), generator=g)[:n], 0


def run_info(args):
    from ..data import load_dataset, resolve
    from ..viz.grids import save_grid

    if args.n < 1:
        raise UserError("--n must be at least 1.")
    name, path = resolve(args.name, args.path)
    ds = load_dataset(name, args.split, path, image_size=args.image_size, channels=args.channels)
    print(f"dataset   {name} ({args.split})" + (f" from {path}" if path else ""))
    for line in describe(ds):
        print(line)
    if args.autoencoder:
        from ..latent_space import health, load_latent_space

        for line in health(load_latent_space(args.autoencoder), ds.images):
            print(line)
    idx, nrow = pick(ds, args.n)
    out = args.out or Path("runs") / "data" / f"{name}-{args.split}.png"
    H = ds.shape[1]
    save_grid(ds.images[idx].float() / 255, out, nrow=nrow or None, scale=max(1, min(4, 64 // H)))
    print(f"grid      {len(idx)} images -> {out}" + (" (one row per class)" if nrow else ""))
