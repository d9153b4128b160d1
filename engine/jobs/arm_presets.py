"""The learning curve's arms as batch-job presets, one definition for `main.py evaluate --arm NAME` and the app's
Evaluate… dialog. An arm is a batch job that `evaluate` runs on each fraction's subset (it sets input, output and the
split itself); a preset is that job's settings, built on a base job: the app's current generation settings, or on
the command line the default job (the default model adds one polyp per frame at a random mask sized like the
input's own polyps).

- ``synthetic``: the base job as it is;
- ``synthetic-judged``: the same, keeping only variants in which the polyp judge finds the new polyp (up to
  JUDGED_ATTEMPTS generations each, at least JUDGED_VARIANTS planned per frame so that about as many are kept as
  there are real frames);
- ``copy-paste``: the subset's own polyps pasted elsewhere with a soft margin, no model (transplant, harmonize
  none): the honest baseline every generator must beat;
- ``transplant``: the same polyps moved and redrawn by the model at TRANSPLANT_STRENGTH (harmonize model);
- ``removal``: the subset's own polyps removed by the model ("Normal" at each polyp's box): polyp-free frames of the
  subset's mucosa, for the false-positive rate on polyp-free frames.

Mixed arms by name (``MIX_PRESETS``): ``judged-and-copy-paste`` draws half its variants from ``copy-paste`` and half
from ``synthetic-judged`` (engine.evaluation.curve_arms.draw_mixed).

``write_arm_job`` checks a preset's settings as a job file would be checked (engine.jobs.build_spec) and writes it
atomically as TOML, which must read back to the same keys. Torch-free and Qt-free.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from engine.errors import InputError
from engine.fileio import atomic_write_bytes

TRANSPLANT_STRENGTH = 0.3
JUDGED_ATTEMPTS = 4  # the judge-kept arm: generations per variant before it is left out
JUDGED_VARIANTS = 2  # and at least this many planned per frame
DEFAULT_JUDGE = "polyp-judge"
DEFAULT_ARM = "synthetic"  # `evaluate` without --arm, --generate or --synthetic
# The command line's base job: what `main.py --batch --mask-source random --no-judge` does with the default model
# (the synthetic arm is the unchecked baseline; synthetic-judged adds the judge).
COMMAND_LINE_BASE = {"mode": "add", "mask_source": "random", "variants": 1, "seed": 0}
# Keys of a base job that the evaluation sets itself per fraction (engine.evaluation.curve_arms), or that belong to
# the app's own output folder.
SET_BY_EVALUATION = ("input", "output", "masks", "split_file", "from_splits", "resume")
BUNDLE_KEYS = ("model", "judge")  # a bundle name or folder (engine.bundle.format.find_bundle)
PRESETS = {
    "synthetic": "the generation settings as they are (model, mode, mask source, variants, …)",
    "synthetic-judged": "the same generation settings, keeping only the variants in which the polyp judge finds the "
                        f"new polyp (up to {JUDGED_ATTEMPTS} tries each, at least {JUDGED_VARIANTS} planned per frame)",
    "copy-paste": "the subset's own polyps pasted elsewhere with a soft margin, no model (mode transplant, harmonize "
                  "none)",
    "transplant": f"the subset's own polyps moved and redrawn by the model at strength {TRANSPLANT_STRENGTH:g} (mode "
                  "transplant, harmonize model)",
    "removal": "the subset's own polyps removed by the model (mode remove at each polyp's box): polyp-free frames",
}

# Mixed arms by name (`evaluate --mix NAME`, the app's dialog): the preset arms whose pools they draw on, equally.
MIX_PRESETS = {"judged-and-copy-paste": ("copy-paste", "synthetic-judged")}
MIX_DESCRIPTIONS = {
    "judged-and-copy-paste": "half copy-paste, half judge-kept synthetic, as many frames as any other arm: does the "
                             "generator add what more copy-paste does not?",
}


def mix_parts(name: str) -> tuple[str, ...]:
    """The preset arms a mix preset draws on; InputError naming the presets when there is no such mix."""
    if name not in MIX_PRESETS:
        raise InputError(f"--mix {name}: no such mix preset (presets: {', '.join(MIX_PRESETS)}; or NAME=ARM+ARM)")
    return MIX_PRESETS[name]


def arm_job_values(arm: str, base: dict | None = None) -> dict:
    """The job settings of preset ``arm`` built on ``base`` (a job's settings; None: the command line's base job)."""
    current = {k: v for k, v in (COMMAND_LINE_BASE if base is None else base).items()
               if v is not None and k not in SET_BY_EVALUATION}
    # The arms say themselves whether a judge checks them: synthetic is the unchecked baseline even where the base job
    # (the app's settings) asks for the model's judge; synthetic-judged names the judge. Likewise the removal arm keeps
    # every removal as painted (the mucosa check is the front doors' default, not the curve's baseline).
    current.pop("model_judge", None)
    current.pop("mucosa_check", None)
    shared = {k: current[k] for k in ("variants", "seed", "formats") if k in current}
    model = {k: current[k] for k in ("model", "provider") if k in current}
    if arm == "synthetic":
        return current
    if arm == "synthetic-judged":
        return {**current, "variants": max(JUDGED_VARIANTS, int(current.get("variants", 1))),
                "judge": current.get("judge", DEFAULT_JUDGE), "min_judge_score": current.get("min_judge_score", 0.5),
                "max_attempts": max(JUDGED_ATTEMPTS, int(current.get("max_attempts", 1)))}
    if arm == "copy-paste":
        return {"mode": "transplant", "harmonize": "none", **shared}
    if arm == "transplant":
        return {"mode": "transplant", "harmonize": "model", "strength": TRANSPLANT_STRENGTH, **shared, **model}
    if arm == "removal":
        return {"mode": "remove", "mask_source": "box", **shared, **model}
    raise InputError(f"--arm {arm}: no such arm preset (presets: {', '.join(PRESETS)}; or NAME=JOB.toml)")


def _absolute(key: str, value) -> str:
    """A path of a job file as an absolute path (a job file reads relative ones from its own folder)."""
    if key in BUNDLE_KEYS:
        from engine.bundle.format import find_bundle

        return str(find_bundle(value).expanduser().resolve())
    return str(Path(value).expanduser().resolve())


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"job settings: {value} cannot be written to a job file")
        return repr(value)
    if isinstance(value, (str, Path)):  # a TOML basic string: JSON's escapes are TOML's, plus DEL
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise InputError(f"job settings: {value!r} cannot be written to a job file")


def job_file_text(values: dict, comment: str) -> str:
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_arm_job(name: str, values: dict, folder: Path, train: Path, comment: str) -> Path:
    """Check an arm's job (engine.jobs.build_spec: the same refusals as a job file) and write it atomically to
    ``folder/<name>.toml``; read back, it must give the same keys."""
    from engine.jobs import build_spec
    from engine.jobs.spec import PATH_FIELDS

    path = Path(folder) / f"{name}.toml"
    values = {k: (_absolute(k, v) if k in PATH_FIELDS else v) for k, v in values.items()}
    try:
        build_spec({**values, "input": str(train), "output": str(Path(folder).parent / "synthetic")}, source=str(path))
    except InputError as exc:  # a value's own refusal does not name the file
        raise InputError(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}") from None
    text = job_file_text(values, comment)
    if tomllib.loads(text) != json.loads(json.dumps(values)):
        raise InputError(f"{path}: the job settings do not survive being written as TOML ({values})")
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
