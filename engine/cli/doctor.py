"""Command-line wiring of ``main.py doctor`` (engine.doctor): register_commands(subparsers) -> {name: handler}.

Exit codes: 0 ready (possibly with warnings), 1 not ready (the verdict says why). The report module is
imported inside the handler so ``main.py --help`` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

EXIT_READY, EXIT_NOT_READY = 0, 1

Handler = Callable[[argparse.Namespace], int]


def register_commands(subparsers) -> dict[str, Handler]:
    doctor = subparsers.add_parser(
        "doctor",
        help="check this PC: versions, onnxruntime providers, GPU libraries, bundles, free disk",
        description="Print, in one screen, what PolypForge runs with here: app and engine versions, Python, "
        "onnxruntime and its providers, whether the CUDA/cuDNN/TensorRT libraries load (naming the missing file), "
        "each model bundle with kind, size and integrity (sha256 check), the free disk at the output location, "
        "and a one-line verdict. Exit code 0: ready; 1: not ready.",
    )
    doctor.add_argument("--json", action="store_true", help="the report as JSON (for a support ticket)")
    doctor.add_argument("--output", type=Path, default=None,
                        help="where datasets will be written (free disk is measured there; default: the current folder)")
    doctor.add_argument("--no-verify", action="store_true",
                        help="skip the bundles' sha256 check (fast; integrity shows 'not checked')")
    return {"doctor": run_doctor_command}


def run_doctor_command(args: argparse.Namespace) -> int:
    from engine.doctor import format_report, report_json, run_doctor

    report = run_doctor(output=args.output, verify_hashes=not args.no_verify)
    print(report_json(report) if args.json else format_report(report))
    return EXIT_NOT_READY if report.status == "problem" else EXIT_READY
