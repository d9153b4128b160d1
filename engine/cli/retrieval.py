"""Command-line wiring of the retrieval proposer: ``export-features``, ``db build|add|info``, ``propose``.

``register_commands(subparsers)`` adds the three commands to main.py's subparsers and returns
{command name: handler}; a handler takes the parsed Namespace and returns an exit code (0 done; 1 done, but
nothing proposed / integrity problems found), raising engine.errors.PolypForgeError subclasses for the
one-line errors main.py prints with exit code 2 (cannot start). Heavy modules (onnxruntime, faiss, torch)
are imported inside the handlers, so ``main.py --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from engine.cli.args import positive_int
from engine.errors import InputError

EXIT_OK, EXIT_PROBLEMS = 0, 1
DEFAULT_FEATURES = "demo-dinov2"

Handler = Callable[[argparse.Namespace], int]


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _grid(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("×", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid {text!r}: expected N or ROWSxCOLS, e.g. 16 or 16x20") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"grid {text!r}: expected N or ROWSxCOLS with positive numbers")
    return parts[0], parts[1]


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--polyps", type=Path, help="polyp frames: a Kvasir-like folder (images/ + masks/), or frames "
                        "+ --masks DIR")
    parser.add_argument("--masks", type=Path, help="masks for --polyps, paired by name")
    parser.add_argument("--normals", type=Path, help="curator-supplied polyp-free frames with masks of where a polyp "
                        "was or could be (masks/ inside, or --normals-masks DIR)")
    parser.add_argument("--normals-masks", type=Path, help="masks for --normals, paired by name")
    parser.add_argument("--remove-polyps", action="store_true",
                        help='make each polyp frame polyp-free with the inpainting model (prompt "Normal" in the '
                        "polyp boxes padded by 15 px) before storing it, as Polyp-Gen does. Without it the polyp "
                        "frames themselves are the entries: a shortcut (the paper's entries are polyp-free)")
    parser.add_argument("--model", type=Path, default=None,
                        help="inpainting bundle for --remove-polyps (default: the default model, polypforge-compact)")
    parser.add_argument("--steps", type=positive_int, default=None, help="denoising steps for --remove-polyps")
    parser.add_argument("--features", default=None,
                        help=f"feature bundle (folder or name in exported_models/; build default: {DEFAULT_FEATURES}, "
                        "random weights; add default: the database's)")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    parser.add_argument("--threads", type=int, default=None)


def register_commands(subparsers) -> dict[str, Handler]:
    """Add export-features, db and propose to main.py's subparsers; returns {name: handler}."""
    export = subparsers.add_parser(
        "export-features",
        help="export a local transformers Dinov2Model folder to a feature bundle (retrieval)",
        description="Export a local transformers Dinov2Model folder (e.g. facebook/dinov2-base, the paper's "
        "ViT-B/14) to a \"dinov2\" ONNX bundle for the retrieval proposer, checking it against torch. Needs "
        "the export extra.",
    )
    export.add_argument("--from", dest="source", required=True, type=Path, help="Dinov2Model folder (config.json)")
    export.add_argument("--to", dest="destination", required=True, type=Path, help="bundle folder to write")
    export.add_argument("--grid", type=_grid, default=(16, 16),
                        help="patch grid ROWSxCOLS the whole frame is resized to (default 16 → 224×224 px)")
    export.add_argument("--opset", type=int, default=17)
    export.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")

    db = subparsers.add_parser(
        "db",
        help="build, extend or check a retrieval database (for --mask-source retrieved and `propose`)",
        description="The retrieval database: (polyp-free frame, mask of where a polyp was) entries with their "
        "DINOv2 features and a FAISS index.",
    )
    actions = db.add_subparsers(dest="db_action", metavar="ACTION")
    actions.required = True
    build = actions.add_parser("build", help="build a new database", description="Build a new database from "
                               "polyp frames with masks (and/or curator-supplied normal frames with masks).")
    _add_source_options(build)
    build.add_argument("--to", dest="database", required=True, type=Path, help="database folder to write")
    build.add_argument("--overwrite", action="store_true", help="replace an existing database folder")
    add = actions.add_parser("add", help="add frames to a database", description="Add entries to an existing "
                             "database (committed all at once at the end; an interrupted add changes nothing).")
    add.add_argument("database", type=Path, help="database folder")
    _add_source_options(add)
    info = actions.add_parser("info", help="describe a database and check its integrity")
    info.add_argument("database", type=Path, help="database folder")
    info.add_argument("--json", action="store_true", help="print the description as JSON")

    propose = subparsers.add_parser(
        "propose",
        help="propose where a polyp belongs in a frame (retrieval)",
        description="Propose regions for a synthetic polyp in FRAME: global top-K retrieval from the database, "
        "patch matching inside each candidate's mask, DBSCAN, one box per candidate.",
    )
    propose.add_argument("frame", type=Path)
    propose.add_argument("--db", dest="database", required=True, type=Path, help="database folder")
    propose.add_argument("--top-k", type=positive_int, default=5, help="candidates to retrieve (default 5)")
    propose.add_argument("--out", type=Path, default=None, help="write the best proposal as a binary mask PNG")
    propose.add_argument("--explain", type=Path, default=None, help="write the explain picture (PNG)")
    propose.add_argument("--features", default=None, help="feature bundle (default: the one the database records)")
    propose.add_argument("--json", dest="json_out", type=Path, default=None, help="write the proposals as JSON")
    propose.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    propose.add_argument("--threads", type=int, default=None)

    return {"export-features": run_export_features, "db": run_db, "propose": run_propose}


# ---------------------------------------------------------------------------------------------- handlers
def run_export_features(args: argparse.Namespace) -> int:
    from engine.export.dinov2_export import export_dinov2_bundle

    export_dinov2_bundle(args.source, args.destination, grid=tuple(args.grid), opset=args.opset, name=args.name,
                         overwrite=args.overwrite)
    return EXIT_OK


def run_db(args: argparse.Namespace) -> int:
    return {"build": run_db_build, "add": run_db_add, "info": run_db_info}[args.db_action](args)


def _load_extractor(features, provider: str, threads):
    from engine.bundle.format import find_bundle
    from engine.retrieval.features import open_feature_extractor

    extractor = open_feature_extractor(find_bundle(features), provider=provider, threads=threads)
    if extractor.provider_note:
        _err(extractor.provider_note)
    if extractor.bundle.manifest.get("random_weights"):
        _err(f"features: {extractor.name} — RANDOM weights: retrieval runs, but what it retrieves is "
             "geometrically valid and semantically meaningless (export the real DINOv2 ViT-B/14 with "
             "`main.py export-features`)")
    return extractor


def _collect_sources(args: argparse.Namespace):
    from engine.retrieval.build import discover_sources

    if args.polyps is None and args.normals is None:
        raise InputError("give --polyps DIR and/or --normals DIR: the frames (with masks) to put in the database")
    if args.masks is not None and args.polyps is None:
        raise InputError("--masks pairs masks with --polyps frames: give --polyps too")
    if args.normals_masks is not None and args.normals is None:
        raise InputError("--normals-masks pairs masks with --normals frames: give --normals too")
    if args.remove_polyps and args.polyps is None:
        raise InputError("--remove-polyps works on --polyps frames: give --polyps")
    sources = []
    if args.polyps is not None:
        found, notes = discover_sources(args.polyps, args.masks, "polyp")
        sources += found
        for note in notes:
            _err(f"polyps: {note}")
        if not args.remove_polyps:
            _err("polyps: the polyp frames themselves become the entries (a shortcut: the paper's entries are "
                 "polyp-free; --remove-polyps makes them so with the inpainting model)")
    if args.normals is not None:
        found, notes = discover_sources(args.normals, args.normals_masks, "normal")
        sources += found
        for note in notes:
            _err(f"normals: {note}")
    return sources


def _remover(args: argparse.Namespace):
    if not args.remove_polyps:
        return None
    from engine.retrieval.build import PolypRemover

    model = args.model
    if model is None:
        from engine.jobs.spec import DEFAULT_MODEL

        model = DEFAULT_MODEL
        _err(f"--remove-polyps with the default model ({model.name}; pass --model for another)")
    remover = PolypRemover(model, provider=args.provider, steps=args.steps, threads=args.threads)
    if remover.pipeline.provider_note:
        _err(remover.pipeline.provider_note)
    return remover


def _print_report(report, verb: str) -> None:
    seconds = report.stage_seconds
    stages = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items() if value > 0)
    if report.skipped:
        print(f"skipped {len(report.skipped)} frame(s):")
        for path, reason in report.skipped:
            print(f"  {path}: {reason}")
    for note in report.notes:
        print(note)
    print(f"{verb} {report.added} entries → {report.database}: {report.count} entries in all, "
          f"{report.seconds:.1f} s ({stages})")


def run_db_build(args: argparse.Namespace) -> int:
    from engine.retrieval.build import build_database

    sources = _collect_sources(args)
    extractor = _load_extractor(args.features or DEFAULT_FEATURES, args.provider, args.threads)
    remover = _remover(args)
    print(f"building {args.database} from {len(sources)} frame(s) with the features of {extractor.name} "
          f"({extractor.grid.rows}×{extractor.grid.cols} patches, dim {extractor.dim})")
    report = build_database(args.database, sources, extractor, remover, overwrite=args.overwrite, log=_err)
    _print_report(report, "built:")
    return EXIT_OK


def run_db_add(args: argparse.Namespace) -> int:
    from engine.retrieval.build import add_to_database
    from engine.retrieval.database import RetrievalDatabase

    database = RetrievalDatabase.open(args.database)
    sources = _collect_sources(args)
    features = args.features or _recorded_bundle(database)
    extractor = _load_extractor(features, args.provider, args.threads)
    database.check_features(extractor.identity())
    remover = _remover(args)
    report = add_to_database(args.database, sources, extractor, remover, log=_err)
    _print_report(report, "added:")
    return EXIT_OK


def _recorded_bundle(database):
    from engine.bundle.format import find_bundle

    name = database.features.get("name")
    if database.features.get("kind") != "dinov2" or not name:
        raise InputError(f"{database.root}: its features come from {name!r}, not a feature bundle: pass --features")
    return find_bundle(name)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def run_db_info(args: argparse.Namespace) -> int:
    from engine.retrieval.database import RetrievalDatabase

    database = RetrievalDatabase.open(args.database)
    info = database.info()
    problems, notes = database.verify()
    if args.json:
        print(json.dumps({**info, "problems": problems, "notes": notes}, indent=1))
        return EXIT_PROBLEMS if problems else EXIT_OK
    features = info["features"]
    print(f"database   {info['path']}")
    print(f"entries    {info['count']}" + (f"  ({', '.join(f'{v} {k}' for k, v in info['how'].items())})" if info["how"] else ""))
    print(f"size       {_size(info['size_bytes'])}")
    print(f"features   {features.get('name')} (bundle id {str(features.get('bundle_id'))[:16]}…), "
          f"{info['grid'][0]}×{info['grid'][1]} patches of {info['patch_size']} px, dim {info['dim']}")
    print(f"created    {info['created']}   updated {info['updated']}   PolypForge {info['polypforge_version']}")
    print(f"db id      {info['db_id']}")
    for note in notes:
        print(f"note: {note}")
    if problems:
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print(f"integrity: {len(problems)} problem(s)")
        return EXIT_PROBLEMS
    print("integrity: ok (files, sizes, index rows and vectors, entries, masks, feature bundle)")
    return EXIT_OK


def run_propose(args: argparse.Namespace) -> int:
    from engine.dataset.image_reader import read_frame
    from engine.fileio import atomic_write_bytes, save_png_atomic
    from engine.retrieval.database import RetrievalDatabase
    from engine.retrieval.proposer import RetrievalProposer

    frame = read_frame(args.frame)
    database = RetrievalDatabase.open(args.database)
    features = args.features or _recorded_bundle(database)
    extractor = _load_extractor(features, args.provider, args.threads)
    proposer = RetrievalProposer(database, extractor)
    proposals = proposer.propose(frame, top_k=args.top_k)
    refusals = proposer.last_refusals
    height, width = frame.shape[:2]
    print(f"{args.frame} ({width}×{height}): {len(proposals)} proposal(s) from {len(proposer.last_candidates)} "
          f"candidate(s) of {database.count} entries")
    for rank, proposal in enumerate(proposals, start=1):
        x, y, w, h = proposal.box
        merged = f"  (merged with {', '.join(str(c.entry_id) for c in proposal.merged)})" if proposal.merged else ""
        print(f"  #{rank}  box x={x:.1f} y={y:.1f} w={w:.1f} h={h:.1f}  score {proposal.score:.3f}  "
              f"candidate {proposal.candidate.entry_id} {proposal.candidate.source}{merged}")
    for refusal in refusals:
        print(f"  refused: candidate {refusal.candidate.entry_id}: {refusal.reason_refused}")
    if args.out is not None:
        if proposals:
            save_png_atomic(args.out, proposals[0].mask(height, width).astype("uint8") * 255)
            print(f"wrote {args.out} (proposal #1)")
        else:
            print(f"no proposal: {args.out} not written")
    if args.explain is not None:
        from engine.retrieval.explain import write_explain

        write_explain(args.explain, frame, proposals, refusals, database, query_name=args.frame.name)
        print(f"wrote {args.explain}")
    if args.json_out is not None:
        payload = {"frame": str(args.frame), "frame_size": [width, height], **proposer.describe(),
                   "proposals": [p.to_json() for p in proposals], "refused": [r.to_json() for r in refusals]}
        atomic_write_bytes(args.json_out, (json.dumps(payload, indent=1) + "\n").encode("utf-8"))
    return EXIT_OK if proposals else EXIT_PROBLEMS

