"""Batches built ahead of the trainer in worker processes (``main.py train --loader-workers N``).

Why: on a GPU the compact model's step takes a few milliseconds, while building its batch (crops, boundary-enhanced
pseudo masks, flips, one sample at a time in Python) takes about 2.4 ms per sample on one core: the loop would wait
on the data most of the time. The data of step s depends on (seed, s, micro, rank) alone (engine.training.loop), so
any process can build it: N forked workers each call ``task.make_raw_batch`` for the coming steps, at most ``depth``
ahead, and the loop takes them in step order. The batches are therefore the same as without workers, bit for bit,
and a resumed run continues the same sequence.

The workers are forked (they share the loaded corpus without copying it) and created before the trainer touches the
GPU; they only build numpy arrays. Where fork does not exist (Windows), asking for workers is an error that says so.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from typing import Any, Callable, Iterator

import numpy as np

from engine.training.task import TrainingError, TrainingTask

RngOf = Callable[[int, int, int, int], np.random.Generator]  # (seed, step, micro, rank) → the step's generator
WAIT_SECONDS = 600  # a batch takes seconds; a worker silent this long is stuck
_WORKER: tuple[TrainingTask, RngOf] | None = None  # the task and its rng, inherited by the forked workers


def _init_worker() -> None:
    """One torch thread per worker (N workers on N cores, not N × the cores). OpenCV's own thread count is left
    alone: cv2.setNumThreads in a forked child waits forever on the parent's thread pool."""
    import torch

    torch.set_num_threads(1)


def _build(seed: int, step: int, micro: int, rank: int) -> Any:
    assert _WORKER is not None
    task, rng_of = _WORKER
    return task.make_raw_batch(step, rng_of(seed, step, micro, rank))


class BatchPrefetcher:
    """``get(step, micro)`` returns ``task.make_raw_batch(step, rng_of(seed, step, micro, rank))``, built ahead."""

    def __init__(self, task: TrainingTask, rng_of: RngOf, workers: int, seed: int, rank: int = 0,
                 depth: int | None = None):
        if workers < 1:
            raise TrainingError(f"loader workers must be at least 1 (got {workers})")
        if "fork" not in multiprocessing.get_all_start_methods():
            raise TrainingError("--loader-workers needs processes started by fork, which this system does not have; "
                                "train without it")
        global _WORKER
        _WORKER = (task, rng_of)
        self.seed, self.rank = seed, rank
        self.depth = depth or 2 * workers
        self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker)
        self.pending: deque[tuple[tuple[int, int], Any]] = deque()
        self.keys: Iterator[tuple[int, int]] | None = None

    def start(self, first_step: int, last_step: int, grad_accum: int) -> None:
        """The (step, micro) keys the loop will ask for, in order."""
        self.keys = ((step, micro) for step in range(first_step, last_step) for micro in range(grad_accum))

    def _fill(self) -> None:
        while self.keys is not None and len(self.pending) < self.depth:
            key = next(self.keys, None)
            if key is None:
                self.keys = None
                return
            self.pending.append((key, self.pool.apply_async(_build, (self.seed, key[0], key[1], self.rank))))

    def get(self, step: int, micro: int) -> Any:
        self._fill()
        if not self.pending or self.pending[0][0] != (step, micro):
            # Asked out of the planned order (not expected from the loop): build it here rather than guess.
            return _build(self.seed, step, micro, self.rank)
        _key, result = self.pending.popleft()
        try:
            raw = result.get(timeout=WAIT_SECONDS)
        except multiprocessing.TimeoutError:
            raise TrainingError(f"step {step}: no loader worker delivered its batch in {WAIT_SECONDS} s; train "
                                "without --loader-workers") from None
        self._fill()
        return raw

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
        self.pending.clear()

