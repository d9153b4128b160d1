"""Smoke test of the BUILT app (dist/PolypForge), not the source tree.

    python installer/smoke_test.py [--app dist/PolypForge/PolypForge] [--no-unshare] [--json-out FILE]

Runs, from an empty temporary folder with a throwaway HOME and cache:
  1. ``--version``                          (prints PolypForge <engine version>)
  2. ``doctor --json`` and ``doctor``       (built app, demo bundles found in <app>/models and intact)
  3. ``--batch`` on generated frames (engine.samples) with the network unavailable (``unshare -n``: a network
     namespace without interfaces), then checks the dataset: COCO loads (pycocotools when installed), and the
     images on disk, the COCO images, the YOLO labels and the manifest's ok lines all agree
  4. the window, offscreen (QT_QPA_PLATFORM=offscreen), closed by POLYPFORGE_QUIT_AFTER_MS
and prints each step's wall time (cold start: each is a fresh process). Exit code 0 when all pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_APP = REPO / "dist" / "PolypForge" / ("PolypForge.exe" if os.name == "nt" else "PolypForge")
FRAMES = 4


class SmokeFailure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def unshare_prefix(wanted: bool) -> list[str]:
    """`unshare -n` (root) or `unshare -rn` (user namespace) when it works here, else [] (and say so)."""
    if not wanted or not sys.platform.startswith("linux") or not shutil.which("unshare"):
        return []
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    return []


class Runner:
    def __init__(self, app: Path, work: Path, net_prefix: list[str]):
        self.app, self.work, self.net_prefix = app, work, net_prefix
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "POLYPFORGE", "QT_", "VIRTUAL_ENV"))}
        self.env.update(HOME=str(work / "home"), XDG_CACHE_HOME=str(work / "cache"), XDG_CONFIG_HOME=str(work / "config"),
                        POLYPFORGE_CACHE_DIR=str(work / "cache" / "polypforge"))
        (work / "home").mkdir(parents=True, exist_ok=True)
        self.times: dict[str, float] = {}

    def run(self, label: str, args: list[str], offline: bool = True, timeout: float = 300, env: dict | None = None,
            expect: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        command = [*(self.net_prefix if offline else []), str(self.app), *args]
        start = time.perf_counter()
        done = subprocess.run(command, check=False, cwd=self.work, env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        self.times[label] = round(time.perf_counter() - start, 2)
        print(f"[{self.times[label]:7.2f} s] {label}: {' '.join(command)} -> {done.returncode}", flush=True)
        if done.returncode not in expect:
            raise SmokeFailure(f"{label} exited {done.returncode} (expected {expect})\nstdout:\n{done.stdout[-3000:]}"
                               f"\nstderr:\n{done.stderr[-3000:]}")
        return done


def check_dataset(dataset: Path) -> dict:
    manifest = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines() if line.strip()]
    ok = [m for m in manifest if m.get("status") == "ok"]
    check(len(ok) >= 1, f"{dataset}/manifest.jsonl has no ok variant: {manifest[:2]}")
    failed = [m for m in manifest if m.get("status") == "failed"]
    check(not failed, f"failed variants: {failed[:2]}")
    generated = sorted((dataset / "images").rglob("*.png"))
    coco_path = dataset / "annotations" / "instances.json"
    coco = json.loads(coco_path.read_text())
    try:
        from pycocotools.coco import COCO

        api = COCO(str(coco_path))
        check(len(api.getImgIds()) == len(coco["images"]), "pycocotools sees a different image count")
        loader = "pycocotools"
    except ImportError:
        loader = "json"
    variant_images = [img for img in coco["images"] if "__" in Path(img["file_name"]).name]
    check(len(variant_images) == len(ok) == len(generated),
          f"counts disagree: {len(ok)} ok manifest lines, {len(variant_images)} generated COCO images, "
          f"{len(generated)} PNGs under images/")
    for image in coco["images"]:
        check((dataset / "images" / image["file_name"]).exists() or (dataset / image["file_name"]).exists()
              or any(p.name == Path(image["file_name"]).name for p in generated),
              f"COCO image {image['file_name']} is not on disk")
    image_ids = {img["id"] for img in coco["images"]}
    check(all(a["image_id"] in image_ids for a in coco["annotations"]), "an annotation points at no image")
    check(len(coco["annotations"]) >= len(ok), "fewer annotations than generated variants (each adds a polyp)")
    labels = sorted((dataset / "labels").rglob("*.txt"))
    check(len(labels) == len(generated), f"{len(labels)} YOLO label files for {len(generated)} images")
    return {"ok_variants": len(ok), "coco_images": len(coco["images"]), "annotations": len(coco["annotations"]),
            "yolo_labels": len(labels), "coco_loader": loader}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, default=DEFAULT_APP, help="the built executable")
    parser.add_argument("--no-unshare", action="store_true", help="do not cut the network (not Linux / no namespaces)")
    parser.add_argument("--json-out", type=Path, help="write timings and results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    app = args.app.resolve()
    if not app.is_file():
        print(f"error: {app}: no built app (run `make installer` first)", file=sys.stderr)
        return 2
    net_prefix = unshare_prefix(not args.no_unshare)
    if not args.no_unshare and not net_prefix:
        print("error: unshare -n / -rn does not work here; rerun with --no-unshare to test with the network up",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="polypforge-smoke-"))
    results: dict = {"app": str(app), "offline_via": " ".join(net_prefix) or "none"}
    try:
        runner = Runner(app, work, net_prefix)
        from engine import __version__

        out = runner.run("--version", ["--version"])
        check(out.stdout.strip() == f"PolypForge {__version__}", f"--version printed {out.stdout!r}")

        if net_prefix:  # the namespace really has no network: even loopback is down (ENETUNREACH, not refused)
            probe = subprocess.run([*net_prefix, sys.executable, "-c",
                                    "import errno, socket, sys\n"
                                    "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=2)\n"
                                    "except OSError as e:\n    sys.exit(0 if e.errno == errno.ENETUNREACH else 3)\n"
                                    "sys.exit(4)"],
                                   capture_output=True, text=True, check=False)
            check(probe.returncode == 0, f"the network namespace is not cut off (probe exit {probe.returncode})")

        out = runner.run("doctor --json", ["doctor", "--json", "--output", str(work)], expect=(0,))
        report = json.loads(out.stdout)
        check(report["frozen"] is True, "doctor says it is not the built app")
        check(Path(report["app_dir"]) == app.parent, f"doctor's app_dir {report['app_dir']} is not {app.parent}")
        names = {b["name"]: b for b in report["bundles"]}
        for name in ("polypforge-compact", "demo-sd-inpaint", "demo-dinov2"):
            check(name in names and names[name]["integrity"] == "ok", f"doctor: {name} missing or broken: {names}")
            check(Path(names[name]["path"]).is_relative_to(app.parent), f"{name} was not found inside the app")
        check(report["onnxruntime"].get("importable"), "onnxruntime does not load in the built app")
        out = runner.run("doctor", ["doctor", "--output", str(work)])
        check("Verdict" in out.stdout, f"doctor printed no verdict: {out.stdout}")
        results["doctor_verdict"] = report["verdict"]

        from engine.samples import (
            generate_sample_set,  # the harness makes the frames; the app only reads them
        )

        generate_sample_set(work / "frames", count=FRAMES, seed=3)
        dataset = work / "dataset"
        runner.run("--batch", ["--batch", "--input", str(work / "frames"), "--output", str(dataset),
                               "--mask-source", "random", "--variants", "1", "--steps", "2", "--quiet",
                               "--no-judge",  # 2 steps paint noise, which the model's polyp judge would reject
                               "--json-summary", str(work / "summary.json")])
        results["dataset"] = check_dataset(dataset)
        check(results["dataset"]["ok_variants"] == FRAMES, f"expected {FRAMES} variants: {results['dataset']}")
        manifest = json.loads((dataset / "manifest.jsonl").read_text().splitlines()[0])
        results["manifest_bundle"] = manifest.get("bundle_id") or manifest.get("bundle")

        # The quality report (scipy, scikit-learn, the demo DINOv2 bundle) from the built app, offline.
        runner.run("report", ["report", "--real", str(work / "frames"), "--synthetic", str(dataset),
                              "--out", str(work / "report")], expect=(0, 1))
        report_json = json.loads((work / "report" / "report.json").read_text())
        check((work / "report" / "report.html").is_file(), "report wrote no report.html")
        results["report_keys"] = sorted(report_json)[:8]

        out = runner.run("window (offscreen)", [], env={"QT_QPA_PLATFORM": "offscreen", "POLYPFORGE_QUIT_AFTER_MS": "1500"},
                         timeout=120)
        results["window_stderr_tail"] = out.stderr[-500:]
        results["times_s"] = runner.times
        results["passed"] = True
        print(json.dumps(results, indent=1))
        return 0
    except (SmokeFailure, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        results["passed"], results["failure"] = False, str(exc)
        print(f"SMOKE TEST FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(results, indent=1) + "\n")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
