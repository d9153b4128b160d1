"""Command-line wiring of the quality report: ``report --real DIR --synthetic DIR --out DIR [--features BUNDLE]``.

``register_commands(subparsers)`` adds the command and returns {"report": handler}; the handler returns 0
(report written, nothing flagged) or 1 (written, some synthetic images flagged as near copies of real ones) and
raises engine.errors.PolypForgeError subclasses for one-line errors (exit 2). Heavy imports stay inside the
handler so ``main.py --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.cli.args import positive_int

EXIT_OK, EXIT_FLAGGED = 0, 1

Handler = Callable[[argparse.Namespace], int]


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 100")
    return value


def register_commands(subparsers) -> dict[str, Handler]:
    report = subparsers.add_parser(
        "report",
        help="quality report: FD and KID on DINOv2 features, t-SNE, memorisation check (offline)",
        description="Compare synthetic frames with real ones using a local feature model (DINOv2 bundle; or a "
        "local Inception bundle): Fréchet distance, KID ± std, a t-SNE scatter, each synthetic frame's nearest "
        "real frame with near copies flagged, and a per-source breakdown for a PolypForge output. Writes "
        "report.html (self-contained), report.json and tsne.png into --out.",
    )
    report.add_argument("--real", required=True, type=Path, help="folder of real frames (Kvasir layout: images/)")
    report.add_argument("--synthetic", required=True, type=Path,
                        help="folder of synthetic frames, or a PolypForge output (read through manifest.jsonl)")
    report.add_argument("--out", required=True, type=Path, help="folder to write the report into")
    report.add_argument("--features", default=None,
                        help="feature bundle: name or folder of a \"dinov2\" or \"inception\" bundle, or \"judge\" (the "
                        "polyp judge's encoder) (default: exported_models/demo-dinov2, RANDOM weights)")
    report.add_argument("--judge", default="auto",
                        help="segmenter bundle for the detectability figures of a PolypForge output (default: "
                        "exported_models/polyp-judge when present)")
    report.add_argument("--no-judge", action="store_true", help="leave the detectability figures out")
    report.add_argument("--batch-size", type=positive_int, default=16, help="frames per feature batch (default 16)")
    report.add_argument("--copy-percentile", type=_percentile, default=5.0,
                        help="flag a synthetic frame closer to a real one than this percentile of the real "
                        "frames' own nearest-neighbour distances (default 5)")
    report.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"report": run_report_command}


class _Bar:
    """A tqdm bar per stage on stderr."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="img" if "features" in stage else "step",
                            file=sys.stderr, leave=True, dynamic_ncols=True)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_report_command(args: argparse.Namespace) -> int:
    from engine.metrics.report import run_report

    def log(text: str) -> None:
        print(text, file=sys.stderr)

    bar = _Bar(args.quiet)
    try:
        result = run_report(args.real, args.synthetic, args.out, features=args.features, batch_size=args.batch_size,
                            copy_percentile=args.copy_percentile, progress=bar, log=log, provider=args.provider,
                            judge=None if args.no_judge else args.judge)
    finally:
        bar.close()
    data = result.data
    overall, mem = data["overall"], data["memorisation"]
    kid = overall["kid"]
    for warning in data["warnings"]:
        print(f"warning: {warning}")
    print(f"features  {data['features'].get('name')} ({data['features']['dim']} dims)")
    print(f"images    {overall['n_real']} real, {overall['n_synthetic']} synthetic")
    print(f"FD        {overall['fd']:.4f}")
    print(f"KID       {kid['mean']:.6f} ± {kid['std']:.6f} ({kid['subsets']} subsets of {kid['subset_size']})")
    print(f"copies    {mem['flagged']} of {len(mem['per_image'])} synthetic frames flagged "
          f"(nearest-real distance < {mem['threshold']:.4f}, the {mem['copy_percentile']:g}th percentile of real "
          "frames' own nearest-neighbour distances)")
    for entry in data["breakdown"]:
        fd = "–" if entry["fd"] is None else f"{entry['fd']:.4f}"
        print(f"  {entry['by']} = {entry['value']}: n {entry['count']}, FD {fd}, flagged {entry['flagged']}")
    det = data.get("detectability")
    if det:
        overall, ceiling = det["overall"], det["ceiling"]
        rate = lambda v: "–" if v is None else f"{100 * v:.0f} %"  # noqa: E731
        print(f"judge     {det['judge']['name']}: found at the region in {rate(overall['found_rate'])} of "
              f"{overall['count']} variants (source frames before: {rate(overall['before_found_rate'])}; ceiling, "
              f"real polyps: {rate(ceiling['found_rate'])} of {ceiling['source_frames_with_polyp']})")
    print(f"wrote {result.html} and {result.json}")
    return EXIT_FLAGGED if mem["flagged"] else EXIT_OK

