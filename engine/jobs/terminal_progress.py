"""The batch job in a terminal: a tqdm progress bar (variants, ETA, current frame and step) or, with
--quiet, one log line per variant; Ctrl+C asks the job to stop within a step and keep what is written."""

from __future__ import annotations

import signal
import sys
import time

from engine.jobs.events import JobEvent


class BatchProgress:
    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bar = None
        self._stop = False
        self._started = time.perf_counter()
        self._previous_handler = None
        try:
            self._previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        except ValueError:  # not the main thread (tests, embedding)
            self._previous_handler = None

    def _on_interrupt(self, signum, frame):
        if self._stop:  # a second Ctrl+C: stop at once
            raise KeyboardInterrupt
        self._stop = True
        self._log("stopping after the current step (Ctrl+C again to abort at once); written files are kept")

    def cancel_requested(self) -> bool:
        return self._stop

    def _log(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def on_event(self, event: JobEvent) -> None:
        if event.kind == "started":
            self._log(event.message)
            if not self.quiet:
                from tqdm import tqdm

                self.bar = tqdm(total=event.total, unit="variant", file=self.stream, dynamic_ncols=True,
                                smoothing=0.1)
            return
        if event.kind == "step" and self.bar is not None:
            # Shown at the bar's next redraw (tqdm limits redraws to a few per second).
            self.bar.set_postfix_str(f"{event.frame[-40:]} v{event.variant} step {event.step}/{event.steps}", refresh=False)
            return
        if event.kind in ("variant", "failed", "skipped", "rejected"):
            if self.bar is not None:
                self.bar.update(event.done - self.bar.n)
            if event.kind == "failed":
                self._log(f"failed: {event.frame}: {event.message}")
            elif self.quiet:
                elapsed = time.perf_counter() - self._started
                detail = f"{event.seconds:.1f} s" if event.kind == "variant" else event.message
                self._log(f"[{event.done}/{event.total}] {event.kind} {event.frame} v{event.variant} ({detail}, {elapsed:.0f} s elapsed)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def print_summary(self, summary) -> None:
        out = self.stream
        for note in summary.notes:
            print(f"note: {note}", file=out)
        print(
            f"{summary.status}: {summary.ok} written, {summary.failed} failed, {summary.skipped} skipped, "
            f"{getattr(summary, 'rejected', 0)} rejected "
            f"of {summary.planned} planned ({summary.reused} from an earlier run) in {summary.seconds:.1f} s "
            f"on {summary.provider.upper()}",
            file=out,
        )
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.stage_seconds.items())
        if stages:
            print(f"time per stage: {stages}", file=out)
        for worker in summary.workers:  # Ray backend
            rate = f"{worker['variants_per_minute']} variants/min busy" if worker["variants_per_minute"] else "no variants"
            print(f"  worker {worker['host']}:{worker['pids'][-1]} on {worker['node']}: {worker['frames']} frames, "
                  f"{worker['variants']} variants, {rate}", file=out)
        for failure in summary.failures[:20]:
            print(f"  failed: {failure['frame']}: {failure['reason']}", file=out)
        if len(summary.failures) > 20:
            print(f"  … and {len(summary.failures) - 20} more (see manifest.jsonl)", file=out)
        print(f"dataset: {summary.output.resolve()}", file=out)
