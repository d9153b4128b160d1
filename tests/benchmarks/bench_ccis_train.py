"""Seconds per optimiser step of CCIS ControlNet training (engine.training.ccis_task) on this machine.

    python tests/benchmarks/bench_ccis_train.py --size tiny --resolution 64 --batch 2 --steps 10 --threads 1
    python tests/benchmarks/bench_ccis_train.py --size full --resolution 256 --batch 1 --steps 2 --threads 1

"full" is a random-weight pipeline of Stable Diffusion 1.5's own shapes (U-Net 320/640/1280/1280, cross-attention
768, SD VAE, CLIP ViT-L/14 text encoder), built from configs here: nothing is downloaded. It times the task's real
path: make_batch, loss (VAE encode, text encoder, ControlNet + frozen U-Net forward), backward, AdamW step.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from engine.export.random_controlnet import build_random_sd15_pipeline
    from engine.samples.frames import generate_sample_set
    from engine.training.ccis_task import CCISControlNetTask, CCISTaskConfig
    from engine.training.corpus import load_corpus

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        sd15 = build_random_sd15_pipeline(root / "sd15", seed=0, size=args.size)
        print(f"built the {args.size} SD-1.5 folder in {time.perf_counter() - started:.1f} s", flush=True)
        generate_sample_set(root / "frames", count=4, seed=3, width=320, height=256, with_polyps_every=1)
        corpus = load_corpus([root / "frames"], held_out_fraction=0.0)
        captions = root / "captions.csv"
        captions.write_text("frame,text\n" + "".join(f"{f.stem},a pale small polyp\n" for f in corpus.train))
        task = CCISControlNetTask(corpus, CCISTaskConfig(source=str(sd15), captions=str(captions),
                                                         resolution=args.resolution, batch_size=args.batch))
        torch.manual_seed(0)
        model = task.build_model()
        parameters = task.trainable_parameters(model)
        optimizer = torch.optim.AdamW(parameters, lr=1e-5)
        print(f"ControlNet {sum(p.numel() for p in parameters) / 1e6:.1f} M trainable parameters; U-Net "
              f"{sum(p.numel() for p in task.unet.parameters()) / 1e6:.1f} M frozen", flush=True)
        times = []
        for step in range(args.steps):
            begun = time.perf_counter()
            batch = task.make_batch(step, np.random.default_rng(step))
            loss, _ = task.loss(model, batch, torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - begun)
            print(f"step {step}: {times[-1]:.2f} s (loss {float(loss):.4f})", flush=True)
        steady = times[1:] or times
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"{args.size} {args.resolution}² batch {args.batch}, {args.threads} thread(s): "
              f"{sum(steady) / len(steady):.2f} s/step (steps after the first; first {times[0]:.2f} s), "
              f"peak RSS {rss:.1f} GB", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
