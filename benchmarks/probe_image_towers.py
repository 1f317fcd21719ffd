"""How fast candidate CLIP image towers learn *shapes*: supervised dominant-shape classification.

A CLIP image tower can only carry shape into the joint space if it can learn shape at all from
a few thousand images. This probe trains each candidate tower, with a linear head on its
E-dimensional output, as an 8-way classifier of the built-in ``shapes`` data (the class of the
largest shape) and prints the validation accuracy after each epoch and the seconds so far:

* ``resnet20`` — the zoo's CIFAR ResNet, ``clip_tiny``'s tower (its fc outputs E);
* ``clip_rn`` — the modified ResNet of ``clip_tiny_rn`` (stages (1, 1, 1, 1), stem width 32,
  total stride 32, attention pooling);
* ``clip_rn_s8`` — the same at stem width 16 without the stem's stride and pool (total stride
  8), with attention pooling; ``clip_rn_s8_gap`` — the same with global average pooling and a
  linear projection instead of attention pooling;
* ``vit`` — ``clip_tiny_vit``'s ViT (4 x 192, patch 8) at 64 px (patch 4 at 32 px).

Every tower gets the same data (``--train`` training / 500 validation images, pre-rendered),
batch 64, AdamW (weight decay 0.05) with a one-cycle schedule peaking at ``--lr``, one thread.

    python benchmarks/probe_image_towers.py                       # every tower, 32 px, 4 epochs
    python benchmarks/probe_image_towers.py --towers resnet20 --image-size 64
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

TOWERS = ("resnet20", "clip_rn", "clip_rn_s8", "clip_rn_s8_gap", "vit")
E = 128


def build_tower(name: str, image_size: int) -> nn.Module:
    import visionzoo as vz
    from visionzoo.models.multimodal.clip import CLIPVisionTransformer
    from visionzoo.models.multimodal.modified_resnet import AttentionPool2d, ModifiedResNet

    if name == "resnet20":
        return vz.create_model("resnet20", num_classes=E)
    if name == "vit":
        patch = 8 if image_size >= 64 else 4
        return CLIPVisionTransformer(
            image_size=image_size, patch_size=patch, width=192, layers=4, heads=3, output_dim=E
        )
    if name == "clip_rn":
        return ModifiedResNet(
            layers=(1, 1, 1, 1), output_dim=E, heads=16, image_size=image_size, width=32
        )
    # Stride-8 variants: no stride in the first stem convolution, no stem pool.
    tower = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=E, heads=16, image_size=64, width=16)
    tower.conv1.stride = (1, 1)
    tower.avgpool = nn.Identity()
    if name == "clip_rn_s8":
        tower.attnpool = AttentionPool2d(image_size // 8, tower.num_features, 16, E)
    else:
        tower.attnpool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(tower.num_features, E)
        )
    return tower


def load(split: str, n: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from visionzoo.data.shapes import ShapesDataset
    from visionzoo.data.transforms import normalize
    from visionzoo.engine.config import DataConfig

    ds = ShapesDataset(split, n, task="classification", image_size=image_size)
    images, labels = zip(*(ds[i] for i in range(n)), strict=True)
    d = DataConfig()
    return normalize(torch.stack(images), d.mean, d.std), torch.tensor(labels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--towers", nargs="+", default=list(TOWERS), choices=TOWERS)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    xtr, ytr = load("train", args.train, args.image_size)
    xva, yva = load("val", 500, args.image_size)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.image_size} px, {args.train} images")
    print("| tower | parameters | accuracy by epoch | seconds |")
    print("|---|---:|---|---:|")
    batch = 64
    steps = args.epochs * (args.train // batch)
    for name in args.towers:
        torch.manual_seed(args.seed)
        model = nn.Sequential(build_tower(name, args.image_size), nn.Linear(E, 8))
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
        start, accs = time.perf_counter(), []
        for _ in range(args.epochs):
            model.train()
            order = torch.randperm(args.train)
            for i in range(args.train // batch):
                idx = order[i * batch : (i + 1) * batch]
                loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            model.eval()
            with torch.no_grad():
                accs.append(float((model(xva).argmax(1) == yva).float().mean()))
        params = sum(q.numel() for q in model[0].parameters())
        seconds = time.perf_counter() - start
        curve = ", ".join(f"{a:.3f}" for a in accs)
        print(f"| {name} | {params:,} | {curve} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
