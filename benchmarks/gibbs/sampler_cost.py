"""CPU time of drawing every Gibbs mask of a model once, at each epoch of a β schedule.

This isolates the sampling overhead (no forward or backward pass) and shows how it changes along the
annealing: the filter sampler stops sweeping once a layer's chains are decided, which happens earlier
for wide layers. Combined with a dense step time from ``step_time.py`` it gives the step-time ratio
averaged over a whole run.

Example::

    PYTHONPATH=src .venv/bin/python benchmarks/gibbs/sampler_cost.py --model resnet20 --epochs 30 \\
        --dense-step 1.038
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from secateurs.methods import Horizon, build_method
from secateurs.methods.gibbs import GibbsMask
from secateurs.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=30, help="length of the schedule")
    parser.add_argument("--every", type=int, default=3, help="time every n-th epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--granularities", nargs="*", default=["unstructured", "kernel", "filter"])
    parser.add_argument("--dense-step", type=float, help="dense step CPU seconds, to print ratios")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"| granularity | epoch | beta | sampling CPU s (median of {args.repeats}) |"
          + (" est. step ratio |" if args.dense_step else ""))
    print("|---|---|---|---|" + ("---|" if args.dense_step else ""))
    for gran in args.granularities:
        torch.manual_seed(0)
        model = build_model(args.model, in_channels=1, num_classes=10, image_size=28)
        method = build_method("gibbs", sparsity=args.sparsity, granularity=gran)
        method.attach(model, horizon=Horizon(epochs=args.epochs, steps_per_epoch=100))
        model.train()
        modules = [(m, n) for m in model.modules() for n, _ in getattr(m, "parametrizations", {}).items()]
        masks = [p for m, n in modules for p in m.parametrizations[n] if isinstance(p, GibbsMask)]
        costs = []
        for epoch in range(0, args.epochs, args.every):
            method.on_epoch_start(epoch)
            times = []
            for _ in range(args.repeats):
                start = time.process_time()
                for (module, name), p in zip(modules, masks):
                    p.sample(module.parametrizations[name].original)
                times.append(time.process_time() - start)
            cost = statistics.median(times)
            costs.append(cost)
            ratio = f" {1 + cost / args.dense_step:.2f} |" if args.dense_step else ""
            print(f"| {gran} | {epoch} | {method.beta_at(epoch):.4g} | {cost:.3f} |{ratio}")
        mean = statistics.fmean(costs)
        ratio = f" {1 + mean / args.dense_step:.2f} |" if args.dense_step else ""
        print(f"| {gran} | mean over the schedule | | {mean:.3f} |{ratio}")


if __name__ == "__main__":
    main()
