"""`main.py` run inside the test process, for the runs of a test that are not the one it kills.

A `python main.py train …` subprocess spends 10–13 s importing torch and diffusers before it does anything; a test
that compares an uninterrupted run with a killed-and-resumed one needs a subprocess only for the run it kills.
The others go through the same `main.main` entry point here and come back shaped like `subprocess.run`'s result
(returncode, stdout, stderr), with torch's thread count put back as it was (`--threads` sets it process-wide).
``run_main_in_a_fresh_process`` is the same call in a new interpreter, for what must not run in the test process.
Also: a script of the repository that is not a package module (evaluations/*.py), imported by its path."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The repository's script at ``relative`` (e.g. "evaluations/kvasir_curve.py"), imported as a fresh module."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(args: list[str]) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in this process: exit status and what it printed."""
    import torch

    import main

    threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main.main([str(a) for a in args])
            except SystemExit as exit_:  # argparse errors exit 2
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["main.py", *map(str, args)], code, out.getvalue(), err.getvalue())


def run_main_in_a_fresh_process(args: list, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in a new interpreter: what a curator types, and what forks (loader workers) or measures
    start-up must do outside the long-lived test process."""
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
