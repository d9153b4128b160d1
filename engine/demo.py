"""The demo: generated sample frames through the batch job with the default model (the compact polyp model).

`make demo` runs this on a fresh machine: it writes sample frames (procedural, no patient data), then the two jobs
a curator runs with `main.py --batch`: **add** (a new polyp at a random free place in every frame, sized like real
polyps — the Kvasir-SEG size prior, the frames' own polyps being too few to measure — with the frames' own polyps
carried into the labels; as there, only variants the model's recommended polyp judge finds are kept, up to 4
attempts each, the others in ``add/rejected/``) into ``<output>/add``, and **removal** (each annotated polyp's box, padded 15 px as in
Polyp-Gen, repainted as mucosa with the "Normal" prompt) into ``<output>/removal``. ``<output>/contact_sheet.jpg``
shows both: source | result | the added (or removed) polyp's outline beside, never over, the lesion.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.dataset.contact_sheet import ContactSheetWriter, save_sheet
from engine.jobs.spec import DEFAULT_MODEL, JobSpec, build_spec

DEMO_BUNDLE = DEFAULT_MODEL
DEMO_JOBS = {"add": "a new polyp at a random free place in every frame, sized like real polyps",
             "removal": "each annotated polyp's box repainted as mucosa (prompt Normal)"}
SHEET_ROWS_PER_JOB = 6


def demo_specs(samples_dir: Path, output_dir: Path, variants: int = 2, seed: int = 0,
               provider: str = "auto") -> dict[str, JobSpec]:
    """The demo's two jobs by name ("add", "removal"), on sample frames written into ``samples_dir``."""
    from engine.samples import generate_sample_set

    generate_sample_set(samples_dir, count=6, seed=seed)
    # model_judge, mucosa_check: as main.py --batch, the model's recommended judge (the default model: the polyp judge,
    # add mode) and the removals' mucosa check
    common = {"input": samples_dir, "model": DEMO_BUNDLE, "provider": provider, "seed": seed, "resume": False,
              "model_judge": True, "mucosa_check": True}
    return {
        "add": build_spec({**common, "output": Path(output_dir) / "add", "mask_source": "random", "mode": "add",
                           "variants": variants}, source="demo"),
        "removal": build_spec({**common, "output": Path(output_dir) / "removal", "mask_source": "box",
                               "mode": "remove", "variants": 1}, source="demo"),
    }


def write_demo_sheet(output_dir: Path, specs: dict[str, JobSpec]) -> Path | None:
    """One contact sheet over both jobs' results: up to SHEET_ROWS_PER_JOB variants of each, added first."""
    rows = []
    for spec in specs.values():
        manifest = Path(spec.output) / "manifest.jsonl"
        if not manifest.is_file():
            continue
        records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
        sources = {path.name: path for path in (Path(spec.input) / "images").iterdir()}
        writer = ContactSheetWriter(Path(spec.output), sources)
        for record in records:
            if record.get("status") == "ok" and len(writer.rows) < SHEET_ROWS_PER_JOB:
                writer.add(record)
        rows.extend(writer.rows)
    return save_sheet(rows, Path(output_dir) / "contact_sheet.jpg")
