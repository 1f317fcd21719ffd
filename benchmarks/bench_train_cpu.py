"""Training throughput of visionzoo's Trainer against a plain PyTorch loop.

Both train the same model (same initial weights) on the same `shapes` data, with the same batch
size, optimiser and schedule, for the same number of steps, and both end with one pass over the
validation set. Runs alternate (plain, trainer, plain, trainer, ...) and the medians are
compared. The ratio is trainer images/s divided by plain-loop images/s (goal: >= 0.95).

    python benchmarks/bench_train_cpu.py                    # resnet20 (the default job), 32 px, batch 64
    python benchmarks/bench_train_cpu.py --model mobilenet_v2 --size 64 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from visionzoo.data.transforms import normalize
from visionzoo.engine.config import load_config
from visionzoo.engine.trainer import Trainer


def make_cfg(args: argparse.Namespace, out: str):
    return load_config(
        None,
        [
            f"model={args.model}",
            "data=shapes",
            f"data.image_size={args.size}",
            f"data.batch_size={args.batch}",
            f"data.train_size={args.batch * args.steps}",
            f"data.val_size={args.batch}",
            "trainer.epochs=1",
            "trainer.progress=false",
            "trainer.tensorboard=false",
            "trainer.plots=false",
            f"trainer.log_every={args.steps}",
            f"trainer.output_dir={out}",
        ],
    )


def run_trainer(args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(make_cfg(args, out))
        images = args.steps * args.batch
        t0 = time.perf_counter()
        trainer.fit()
        return images / (time.perf_counter() - t0)


def run_plain(args: argparse.Namespace) -> float:
    """What a person writes by hand: the same data, model, optimiser and schedule."""
    with tempfile.TemporaryDirectory() as out:
        # Build everything through a Trainer so data, model and initial weights are identical,
        # then train with a hand-written loop.
        trainer = Trainer(make_cfg(args, out))
        model, opt, sched = trainer.model, trainer.optimizer, trainer.scheduler
        mean, std = trainer.bundle.mean, trainer.bundle.std
        images = args.steps * args.batch
        t0 = time.perf_counter()
        model.train()
        trainer.train_sampler.set_epoch(0)
        for x, y in trainer.train_loader:
            loss = F.cross_entropy(model(normalize(x, mean, std)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            for x, y in trainer.val_loader:
                logits = model(normalize(x, mean, std))
                F.cross_entropy(logits, y)
                correct += int((logits.argmax(1) == y).sum())
        return images / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="resnet20")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_plain(args)  # warm-up (allocator, oneDNN kernels)
    plain, ours = [], []
    for _ in range(args.repeats):
        plain.append(run_plain(args))
        ours.append(run_trainer(args))
    p_med, o_med = statistics.median(plain), statistics.median(ours)
    print(
        f"model={args.model} size={args.size} batch={args.batch} steps={args.steps} "
        f"threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"{'loop':<10}{'images/s (median)':>20}{'runs':>40}")
    print(f"{'plain':<10}{p_med:>20.1f}{', '.join(f'{v:.1f}' for v in plain):>40}")
    print(f"{'trainer':<10}{o_med:>20.1f}{', '.join(f'{v:.1f}' for v in ours):>40}")
    print(f"ratio trainer/plain = {o_med / p_med:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
