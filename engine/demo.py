"""The demo: generated sample frames through the batch job with the default model (the compact polyp model).

`make demo` runs this on a fresh machine: it writes sample frames (procedural, no patient data), then the
same job `main.py --batch` runs — a polyp added at a random free place in every frame, the frames' own polyps
carried into the labels — and prints where the dataset is.
"""

from __future__ import annotations

from pathlib import Path

from engine.jobs.spec import DEFAULT_MODEL, build_spec

DEMO_BUNDLE = DEFAULT_MODEL


def demo_spec(samples_dir: Path, output_dir: Path, variants: int = 2, seed: int = 0, provider: str = "auto"):
    from engine.samples import generate_sample_set

    generate_sample_set(samples_dir, count=6, seed=seed)
    return build_spec(
        {
            "input": samples_dir,
            "output": output_dir,
            "model": DEMO_BUNDLE,
            "provider": provider,
            "mask_source": "random",
            "mode": "add",
            "variants": variants,
            "seed": seed,
            "resume": False,
        },
        source="demo",
    )
