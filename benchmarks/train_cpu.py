"""Where a CPU training epoch's time goes, old recipe against new, and the CPU recipe end to end.

The profile runs the default recipe and the cpu-fast one (`digitlab train --recipe cpu-fast`)
in one process, taking turns every few steps so that whatever else the machine is doing
slows both alike; the ratios are the figures to trust. Each step is split into data
(slicing the uint8 batch, to float, normalise, memory layout), augmentation, forward (with
the loss), backward and optimizer (AdamW + schedule); seconds per epoch are the measured
time per image times the training set's 55,000 images.

With --full it then trains the cpu-fast recipe exactly as `digitlab train` does (checkpoints
every epoch, export, calibration) and prints the MNIST test accuracy and the wall time.

    python benchmarks/train_cpu.py [--steps N] [--data-dir D]
    python benchmarks/train_cpu.py --full [--out RUN] [--resume] [--steps 0]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from digitlab import train as tr

PHASES = ("data", "augment", "forward", "backward", "optimizer")
TURN = 5  # steps per recipe per turn


@dataclass
class Profiled:
    """One recipe's model, optimizer and batches, with the seconds spent in each phase."""

    name: str
    cfg: tr.TrainConfig
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    order: torch.Tensor
    gen: torch.Generator
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    steps: int = 0


def setup(name: str, splits: tr.Splits) -> Profiled:
    cfg = tr.RECIPES[name]
    device = torch.device("cpu")
    model = tr.build_model(cfg.model, cfg.seed, device, cfg.channels_last)
    steps = tr.steps_per_epoch(len(splits.x_train), cfg.batch_size)
    opt, sched = tr.make_optimizer(model, cfg, steps)
    gen = tr.epoch_generator(cfg, 1, device)
    order = torch.randperm(len(splits.x_train), generator=gen)
    model.train()
    return Profiled(name, cfg, model, opt, sched, order, gen)


def timed_step(p: Profiled, splits: tr.Splits) -> None:
    """One training step, as `train_one_epoch` takes it, with a clock between the phases."""
    cfg, b = p.cfg, p.cfg.batch_size
    clock = [time.perf_counter()]

    def lap() -> None:
        clock.append(time.perf_counter())

    idx = p.order[(p.steps * b) % (len(p.order) - b) :][:b]
    x, y = tr.to_float(splits.x_train[idx]), splits.y_train[idx]
    lap()
    x = tr.augment(x, cfg.augment, p.gen)
    lap()
    x = tr.to_layout(tr.normalise(x), cfg)
    lap()
    loss = F.cross_entropy(p.model(x), y, label_smoothing=cfg.label_smoothing)
    lap()
    p.opt.zero_grad(set_to_none=True)
    loss.backward()
    lap()
    p.opt.step()
    p.sched.step()
    loss.item()
    lap()
    d = [t1 - t0 for t0, t1 in itertools.pairwise(clock)]
    for phase, s in zip(PHASES, (d[0] + d[2], d[1], d[3], d[4], d[5]), strict=True):
        p.seconds[phase] += s
    p.steps += 1


def use_threads(cfg: tr.TrainConfig, default: int, forced: int) -> None:
    torch.set_num_threads(forced or cfg.threads or default)


def profile(splits: tr.Splits, steps: int, threads: int = 0) -> list[Profiled]:
    """Run ``steps`` steps of each recipe, a few at a time in turn; print progress with ETA.

    ``threads`` > 0 runs both with that many threads (the network's gain alone); 0 gives
    each recipe its own setting (the default: torch's one per core; cpu-fast: one).
    """
    default_threads = torch.get_num_threads()
    runs = [setup(n, splits) for n in ("default", "cpu-fast")]
    for p in runs:  # warm-up: oneDNN picks its kernels on the first steps
        use_threads(p.cfg, default_threads, threads)
        for _ in range(2):
            timed_step(p, splits)
        p.seconds, p.steps = dict.fromkeys(PHASES, 0.0), 0
    t0, last = time.perf_counter(), 0.0
    while any(p.steps < steps for p in runs):
        for p in runs:
            use_threads(p.cfg, default_threads, threads)
            for _ in range(min(TURN, steps - p.steps)):
                timed_step(p, splits)
        done = sum(p.steps for p in runs) / (steps * len(runs))
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            eta = (last - t0) * (1 - done) / done
            print(f"  profile {done:5.1%}  eta {eta:4.0f} s", file=sys.stderr, flush=True)
    torch.set_num_threads(default_threads)
    return runs


def per_epoch(p: Profiled, phase: str, n_train: int) -> float:
    return p.seconds[phase] / (p.steps * p.cfg.batch_size) * n_train


def table(runs: list[Profiled], n_train: int) -> str:
    """Markdown: seconds per epoch by phase, each recipe's share, and new / old."""
    old, new = runs[0], runs[-1]
    head = ["phase"] + [f"{p.name} s/epoch (share)" for p in runs] + ["old / new"]
    rows = [head, ["---"] * len(head)]
    totals = {p.name: sum(per_epoch(p, ph, n_train) for ph in PHASES) for p in runs}
    for phase in PHASES:
        secs = {p.name: per_epoch(p, phase, n_train) for p in runs}
        cells = [f"{secs[p.name]:6.1f} ({secs[p.name] / totals[p.name]:4.0%})" for p in runs]
        ratio = per_epoch(old, phase, n_train) / per_epoch(new, phase, n_train)
        rows.append([phase, *cells, f"{ratio:.1f}x"])
    rows.append(["epoch", *(f"{totals[p.name]:6.1f}" for p in runs),
                 f"{totals[old.name] / totals[new.name]:.1f}x"])  # fmt: skip
    whole = {p.name: totals[p.name] * p.cfg.epochs for p in runs}
    cells = [f"{whole[p.name] / 60:.1f} min ({p.cfg.epochs} ep)" for p in runs]
    rows.append(["recipe (epochs x epoch)", *cells, f"{whole[old.name] / whole[new.name]:.1f}x"])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def full_run(run_dir: Path, data_dir: Path | None, resume: bool) -> None:
    """The cpu-fast recipe end to end, as `digitlab train --recipe cpu-fast` runs it."""
    cfg = tr.config_from_checkpoint(run_dir) if resume else tr.CPU_FAST
    t0, first = time.perf_counter(), [0]

    def progress(kind: str, **kw) -> None:
        if kind == "start":  # a resumed run starts after its saved epochs
            first[0] = kw["done"] // max(kw["total"] // cfg.epochs, 1)
        elif kind == "epoch":
            wall = time.perf_counter() - t0
            eta = (kw["epochs"] - kw["epoch"]) * wall / (kw["epoch"] - first[0])
            line = f"epoch {kw['epoch']}/{kw['epochs']}: loss {kw['loss']:.4f}, val {kw['val']:.2%}"
            print(f"{line}, wall {wall:.0f} s, eta {eta:.0f} s", flush=True)

    result = tr.train(cfg, run_dir, data_dir, resume=resume, progress=progress)
    wall = time.perf_counter() - t0
    m, trained = result.card.metrics, result.card.training.wall_time_s
    print(f"cpu-fast: test accuracy {m.test_accuracy:.2%} ({m.test_errors} errors / {m.n_test})")
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min) with data loading, evaluation and export; "
          f"training epochs {trained:.0f} s; model {result.model_path}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    steps_help = "steps per recipe to profile [default: one epoch; 0: no profile]"
    ap.add_argument("--steps", type=int, default=None, help=steps_help)
    threads_help = "profile both recipes with this many threads [default: each its own]"
    ap.add_argument("--threads", type=int, default=0, help=threads_help)
    ap.add_argument("--full", action="store_true", help="then train cpu-fast end to end")
    ap.add_argument("--out", type=Path, default=None, help="run folder for --full")
    ap.add_argument("--resume", action="store_true", help="continue --out's interrupted run")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if args.steps != 0:
        splits = tr.load_splits(tr.CPU_FAST, args.data_dir, torch.device("cpu"))
        n_train = len(splits.x_train)
        steps = args.steps or tr.steps_per_epoch(n_train, tr.TrainConfig.batch_size)
        t0 = time.perf_counter()
        runs = profile(splits, steps, args.threads)
        wall = time.perf_counter() - t0
        threads = {p.name: args.threads or p.cfg.threads or torch.get_num_threads() for p in runs}
        print(f"\n{steps} steps per recipe in {wall:.0f} s; threads {threads}\n")
        print(table(runs, n_train), flush=True)
    if args.full:
        run_dir = args.out or Path(tempfile.mkdtemp(prefix="digitlab-cpu-fast-"))
        print(f"\nfull cpu-fast run in {run_dir}", flush=True)
        full_run(run_dir, args.data_dir, args.resume)


if __name__ == "__main__":
    main()
