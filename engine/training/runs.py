"""One ``main.py train`` run from start to finish: data → task → the trainer → model folder → model card → bundle.

Which task trains is looked up by (``--method``, ``--preset``) in ``TASKS``; each task module builds its task and
trainer settings from the options (engine.training.recipe holds the defaults) and names where its model goes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.errors import InputError
from engine.training import (
    ccis_compact_task,
    ccis_task,
    compact_task,
    detail_task,
    sd_task,
)
from engine.training.loop import train
from engine.training.recipe import TaskEntry, save_model

# (--method, --preset) → the task that trains; no preset: fine-tuning / a ControlNet on the --from folder.
TASKS: dict[tuple[str, str | None], TaskEntry] = {
    ("inpaint", "compact"): compact_task.ENTRY,
    ("inpaint", None): sd_task.ENTRY,
    ("ccis", None): ccis_task.ENTRY,
    ("ccis", "compact"): ccis_compact_task.ENTRY,
    ("detail", "compact"): detail_task.ENTRY,
}


def run_training(args: argparse.Namespace) -> int:
    from engine.training.corpus import load_corpus

    for folder in list(args.input) + list(args.normals):
        if not Path(folder).is_dir():
            raise InputError(f"{folder}: training folder not found")
    compact_inpaint = (getattr(args, "method", "inpaint"), args.preset) == ("inpaint", "compact")
    for flag, what in (("attributes", "conditions"), ("normal_sizes", "shapes the Normal regions of"),
                       ("normal_max_dark", "shapes the Normal regions of"), ("schedule_shift", "shifts the noise schedule of"),
                       ("cell_shortcut", "is a part of"), ("rare_attributes", "draws the training polyps of"),
                       ("attribute_lr_scale", "trains the attribute embeddings of")):
        if getattr(args, flag, None) not in (None, False) and not compact_inpaint:
            raise InputError(f"--{flag.replace('_', '-')} {what} the compact inpainting model (--preset compact, "
                             "--method inpaint)")
    for flag, what in (("rare_attributes", "draws polyps by their measured attributes"),
                       ("attribute_lr_scale", "is the attribute embeddings' learning rate")):
        if getattr(args, flag, None) is not None and not getattr(args, "attributes", False):
            raise InputError(f"--{flag.replace('_', '-')} {what}: it needs --attributes")
    if getattr(args, "cell_shortcut", False) and args.stem is not None and args.stem < 2:  # unset: the preset's 2
        raise InputError("--cell-shortcut passes the detail inside the stem's cells: it needs --stem 2")
    started = time.perf_counter()
    corpus = load_corpus(args.input, args.normals, max_side=args.max_side, held_out_fraction=args.held_out_fraction,
                         limit=args.limit_frames)
    info = corpus.describe()
    print(f"training data: {info['train_frames']} frames ({info['train_polyps']} polyps), "
          f"{info['held_out_frames']} held out; {len(corpus.problems)} unreadable "
          f"({time.perf_counter() - started:.1f} s to load)", flush=True)
    for problem in corpus.problems[:10]:
        print(f"  left out: {problem}", flush=True)
    method = getattr(args, "method", "inpaint")
    entry = TASKS.get((method, args.preset))
    if entry is None:
        raise InputError(f"--method {method} needs --preset compact" if args.preset is None
                         else f"--method {method} has no --preset {args.preset}")
    task, config = entry.build(args, corpus)
    result = train(task, config, args.run, resume=args.resume)
    print(f"trained to step {result.step} (loss {result.last_loss:.4f}, {result.train_seconds / 3600:.2f} h of "
          f"training in all)" if result.last_loss is not None else f"at step {result.step}", flush=True)
    if not args.no_export:
        save_model(entry.output(task), args.run, task, config, result, corpus, bundle=args.bundle, name=args.name)
    return 0
