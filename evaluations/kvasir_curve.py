"""The learning curve on Kvasir-SEG, resumable across sessions: `make evaluate-kvasir`.

Real frames: ../shared/data/kvasir-seg, split as the judge's validation split (engine.evaluation.segdata.holdout:
903 training frames, 97 test frames), linked into WORK/train and WORK/test; polyp-free frames: ../shared/data/normal.
Arms (job files in kvasir-curve-jobs/), against `real`, in phases (PHASES, in the order they train):

1. the issue's default evaluation at the default fractions (0.1, 0.25) and seeds: `synthetic` (the default model at
   random masks sized like the subset's polyps), `copy-paste` (the subset's own polyps pasted elsewhere, no model)
   and `transplant` (moved and redrawn by the default model at strength 0.3);
2. `removal` at 0.1: the subset's polyps removed by the default model (polyp-free frames of the subset's own
   mucosa): do removals lower the false-positive rate on polyp-free frames?
3. the synthetic:real ratio ablation (0.5, 1, 2) at 0.1, 3 seeds, on `synthetic-judged-x4` (judge-kept variants
   of 4 candidates per frame: enough for ratio 2);
4. its ratios 1 and 2 to 5 seeds (added after the 3 seeds put judge-kept ratio 2 above copy-paste on the same
   seeds: does the generator clear the baseline over 5?);
5. `synthetic-judged` at both fractions (added after the first 14 runs had shown the synthetic arm's polyps are
   found by the judge in a quarter of the frames: the same as `synthetic`, but only variants the project judge
   sees as a polyp are kept, up to 4 tries each).
6. `compact96-judged` at 0.1, 3 seeds: issue 25's candidate default model (.bench/compact-96: `make
   compact96-bundle` from the committed run, or `make train-compact96`) in the judge-kept job, against
   `synthetic-judged` and `copy-paste` on the same seeds; skipped, and left out of the report, while the bundle is
   not there (a fresh clone).
7. at 0.1, 5 seeds, 2 synthetic per real frame (added after judge-kept ×2 came out level with copy-paste ×1):
   `copy-paste-x2` (copy-paste with two pastes per frame: the equal-count baseline) and `judged-and-copy-paste` (a
   mix: copy-paste's 72 pastes plus judge-kept ×1's 72 variants, `--mix`): does the generator add anything that more
   copy-paste does not?
8. `synthetic-judged-x6` at 0.1, 3 seeds, 3 synthetic per real frame (judge-kept variants of 6 candidates per
   frame): does more generated data keep helping, where copy-paste has only the subset's own polyps to paste again?
9. `compact128-judged-x4` at 0.1, 5 seeds, 2 synthetic per real frame: issue 25's 128² model (.bench/compact-128,
   trained on a lent GPU: training_runs/compact-128/) in the judge-kept x4 job, against judge-kept x2 of the default
   model and copy-paste x2 on the same seeds; skipped, and left out of the report, while the bundle is not there.
10. `attributes-judged-x4` at 0.1, 3 seeds, 2 synthetic per real frame: the attribute model (.bench/compact-attributes,
   `make attributes-bundle`; attributes drawn from the subset's own polyps) in the same job; skipped likewise.
11. `lift128-judged-x4` at 0.1, 5 seeds, 2 synthetic per real frame: the attribute model lifted to 128² on this CPU
   (.bench/compact-lift128, `make lift128-bundle`: a stem of 2, its trunk still at 64², fine-tuned on 128² crops) in
   the same job, against the 64² models' judge-kept x2 and copy-paste x2 on the same seeds; skipped likewise.
12. the smallest real set, 0.05 (45 frames: 36 to train on, 9 to validate), 5 seeds, in a report of its own
   (WORK/out-smallest, committed in kvasir-curve-smallest/): `copy-paste-x2` against `default-judged-x4` (the default
   model in synthetic-judged-x4's judge-kept job, at 2 synthetic per real frame). Copy-paste can only paste the
   subset's own polyps again, while the generator brings what it learnt from the whole training corpus: if a
   generator beats copy-paste anywhere, it is where the real polyps are fewest. Its own report because the main
   report's ratio ablation is planned at its smallest fraction (0.1) and would move.
13. `guided-judged-x4` at 0.05, 4 seeds (the first four of phase 12): phase 12's judge-kept job with classifier-free
   guidance 5 instead of the bundle's 2.0 (the judge finds twice as many of its polyps per size bin): does the
   segmenter learn more from them than from the default's judge-kept ×2, and than from copy-paste ×2?
14. `removal-mucosa` at 0.1: phase 2's removals with removal's new default blend, the mucosa's own fine texture in
   the fill instead of a blurred patch (phase 2's `removal` job pins the Poisson blend its runs were made with).
15. phase 12 to 8 seeds (seeds 5–7 of real, `copy-paste-x2` and `default-judged-x4`): after 4 seeds the generator
   was ahead of copy-paste in every seed (+0.091, p = 0.12 over seeds). The count was fixed at 8 before seed 4's
   judge-kept run had finished, and the report gives whatever the 8 seeds say; no further seeds are added to this
   comparison.
16. `removal-judged-1in8` at 0.1, 5 seeds: removals the polyp judge no longer sees as polyps (removal-judged.toml:
   the mucosa blend, up to 4 paintings each), 1 per 8 real frames instead of 1:1 (phases 2 and 14 cost −0.17 to
   −0.20 Dice at 1:1): do a few clean polyp-free frames lower the false positives on polyp-free frames without the
   cost?
17. `copy-paste-x2-and-judged-x2` at 0.05, 5 seeds (seeds 0–4, as phase 15's first five): the copy-paste ×2 pool and
   the default model's judge-kept ×2 pool together (a mix at ratio 4: 72 pastes + 72 judge-kept variants beside the 36
   real frames): where real frames are fewest, does the generator add to what copy-paste gives, and copy-paste to
   what the generator gives? Compared per seed with copy-paste ×2 and judge-kept ×2. Twice the synthetic frames of
   either, so a gain may be count; at 72 real frames a second paste per frame added +0.021 (p = 0.51). The count of
   5 seeds is fixed here, before any run of it.
18. `rare128-judged-x4` at 0.05, 5 seeds (seeds 0–4): the lifted 128² model fine-tuned to obey its attributes
   (.bench/compact-rare128, `make rare128-bundle`: rare values drawn more often in training, the embeddings at their
   own rate; asked red reads back 6.5× chance where its parent's 1.75×, lobulated 2.9× where 1.2×) in the judge-kept
   ×4 job, attributes drawn from the subset's own polyps, 2 synthetic per real frame: against `default-judged-x4` and
   `copy-paste-x2` on the same seeds. A generator that paints the looks it is asked may cover more of the real
   polyps than one that paints one look. Registered, with its count of seeds, before any run of it; skipped while the bundle is not there. Run
   2026-12-07: −0.013 Dice to `default-judged-x4` (p = 0.23), +0.058 to `copy-paste-x2` (p = 0.23).
19. `rare128-attribute-guided-x4` at 0.05, 5 seeds (seeds 0–4): phase 18's job with the asked attributes guided at 5
   (`attribute_guidance = 5`, the polyp's own guidance still 2.0). Phase 18 asked the subset's looks but the model
   painted few of them (asked red read back 23 %, irregular 4 %); guided, it paints them (75 %, 23 %), so this pool's
   colours and surfaces follow the subset's real polyps. Does a pool that covers the real looks teach more than the
   default model's mostly pink, smooth polyps? Against `default-judged-x4`, `rare128-judged-x4` and `copy-paste-x2`
   on the same seeds. Registered, with its count of seeds, before any run of it. Run 2026-12-07: −0.002 Dice to
   `default-judged-x4` (p = 0.78), +0.069 to `copy-paste-x2` (p = 0.13).
20–29. phase 15's comparison on independent real subsets: `real`, `copy-paste-x2` and `default-judged-x4` at 0.05 on
   subset draws 1–10 (`--subset-draw K`, one phase and report group each, WORK/out-draw-K, committed in
   kvasir-curve-draws/draw-K/), one seed (0) per draw. Every earlier phase at a fraction trained all its seeds on one
   hash-chosen subset: phase 15's p = 0.068 over 8 seeds is about those 36 frames. Here each draw is another curator's
   36 training frames (+ 9 for validation), with its own copy-paste and judge-kept pools. Registered, with its count of
   10 draws and its test, before any run of it: the primary result is `default-judged-x4` − `copy-paste-x2` in mean
   Dice on the 97 test frames, paired by draw, its 95 % CI and two-sided paired t-test over the 10 draws
   (evaluations/curve_draws.py, written to kvasir-curve-draws/summary.md after every draw); secondary: each against
   `real`, the unseen test frames, the Wilcoxon test over frames. Draw 0 (phases 12/15) is not among them. The
   answer is whatever the 10 draws say; no draws are added to this comparison.
30–39. `own-mask-judged-x4` at 0.05 on subset draws 1–10 (one phase each, into the draw's group beside phases
   20–29's arms, the same real and copy-paste runs), one seed (0) per draw, 2 synthetic per real frame. Every
   generated arm so far painted new polyps at random masks beside the real ones; the batch job's headline use paints
   at the frames' OWN masks: the real polyp's outline repainted with a generated polyp (the real one gone from that
   frame), a new look inside a real outline where copy-paste moves a real look to a new place. Never measured on
   the curve until now. Registered 2026-12-07, with its count of 10 draws and its test, before any run of it: the
   primary result is `own-mask-judged-x4` − `copy-paste-x2` in mean Dice on the 97 test frames, paired by draw, its
   95 % CI and two-sided paired t-test over the 10 draws (kvasir-curve-draws/own-mask-summary.md, rewritten after
   every draw); secondary: against `default-judged-x4` (random masks) and `real`, the unseen test frames, the Wilcoxon
   test over frames. No draws are added. Run 2026-12-07: −0.162 Dice to `copy-paste-x2` [−0.226, −0.099] (p = 0.0003,
   won 0 of 10), −0.161 to `default-judged-x4` (p = 0.0008), +0.035 to `real` (p = 0.37).
40–49. `real` and `copy-paste-x2` trained to the step cap, without early stopping (`--patience 15`: 15 validations
   of 100 steps fit in the 1500-step cap, so no run stops before it), on subset draws 1–10 (one phase each, a group of
   its own per draw: WORK/out-draw-K-full, committed in kvasir-curve-draws-full/draw-K/), one seed (0) per draw.
   Phases 20–39 stop real alone at a median best step of 300 and the arms at 700–1500, and in the three draws where
   real trained to the cap the arms' lead over it was +0.12 where elsewhere +0.23: how much of the +0.2 over real is
   early stopping's? Registered 2026-12-07, with its count of 10 draws and its test, before any run of it: the
   primary result is `copy-paste-x2` − `real`, both trained to the cap, in mean Dice on the 97 test frames, paired by
   draw, its 95 % CI and two-sided paired t-test over the 10 draws (kvasir-curve-draws-full/summary.md, rewritten
   after every draw); secondary: real trained to the cap against real stopped early (phases 20–29's), paired by draw.
   No draws are added. (The judge-kept arm is level with copy-paste ×2 over phases 20–29; its pools would be made
   again in the new folders, so it is left out.)

Each phase is one `main.py evaluate` call that reuses every finished run (`--phase N` runs only phase N, numbered as
here); then `evaluate --report-only` writes one report per group (GROUPS) of every arm and fraction of its phases (an
arm not run at a fraction shows "not run yet"). `--report-only` writes those reports from whatever has finished,
without running a phase (a session that stops between phases).

Finished runs' results (small JSON) and the report are copied into evaluations/kvasir-curve/ (the smallest set's into
evaluations/kvasir-curve-smallest/, a draw's into evaluations/kvasir-curve-draws/draw-K/) after every call and copied
back before the next, so a later session on a fresh machine reuses them (the evaluation reuses a run whose settings
match); the arms' generated frames and the run folders stay in WORK (they hold Kvasir pixels and weights).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (REPO, HERE):  # engine/ is imported lazily by link_split and missing_model; the scripts beside this one
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
COMMITTED = HERE / "kvasir-curve"
JOBS = HERE / "kvasir-curve-jobs"
FRACTIONS = "0.1,0.25"
RATIOS = "0.5,2"
SMALLEST = "0.05"
DEFAULT_SEEDS = 5  # main.py evaluate's --seeds default
# Report groups: name → (output folder in WORK, committed folder, the report's fractions, its ratio ablation).
GROUPS = {"curve": ("out", COMMITTED, FRACTIONS, RATIOS),
          "smallest": ("out-smallest", HERE / "kvasir-curve-smallest", SMALLEST, "")}
# Phases 20–29: the smallest set's generator-vs-copy-paste comparison on independent subset draws, a group each.
DRAWS = range(1, 11)
DRAW_ARMS = ("copy-paste-x2", "default-judged-x4")
OWN_MASK_ARM = "own-mask-judged-x4"  # phases 30–39, on the same draws
DRAWS_COMMITTED = HERE / "kvasir-curve-draws"
GROUPS |= {f"draw-{draw}": (f"out-draw-{draw}", DRAWS_COMMITTED / f"draw-{draw}", SMALLEST, "") for draw in DRAWS}
# Phases 40–49: the draws' real and copy-paste ×2 trained to the step cap (no early stopping), a group each.
DRAWS_FULL = HERE / "kvasir-curve-draws-full"
FULL_LENGTH = ("--patience", "15")  # 15 validations every 100 steps: none stops before the 1500-step cap
FULL_ARMS = ("copy-paste-x2",)
GROUPS |= {f"full-{draw}": (f"out-draw-{draw}-full", DRAWS_FULL / f"draw-{draw}", SMALLEST, "") for draw in DRAWS}
# (arms, fractions, further flags[, group]), in the order they train: the default evaluation is complete
# first. A phase without a group is in "curve".
PHASES = (
    (("synthetic", "copy-paste", "transplant"), FRACTIONS, ()),
    (("removal",), "0.1", ()),
    (("synthetic-judged-x4",), "0.1", ("--ratio-ablation", RATIOS, "--seeds", "3")),
    (("synthetic-judged-x4",), "0.1", ("--ratio-ablation", "2", "--seeds", "5")),
    (("synthetic-judged",), FRACTIONS, ()),
    (("compact96-judged",), "0.1", ("--seeds", "3")),
    (("copy-paste-x2", "judged-and-copy-paste"), "0.1", ("--seeds", "5")),
    (("synthetic-judged-x6",), "0.1", ("--seeds", "3")),
    (("compact128-judged-x4",), "0.1", ("--seeds", "5")),
    (("attributes-judged-x4",), "0.1", ("--seeds", "3")),
    (("lift128-judged-x4",), "0.1", ("--seeds", "5")),
    (("copy-paste-x2", "default-judged-x4"), SMALLEST, ("--seeds", "5"), "smallest"),
    (("guided-judged-x4",), SMALLEST, ("--seeds", "4"), "smallest"),
    (("removal-mucosa",), "0.1", ()),
    (("copy-paste-x2", "default-judged-x4"), SMALLEST, ("--seeds", "8"), "smallest"),
    (("removal-judged-1in8",), "0.1", ("--seeds", "5")),
    (("copy-paste-x2-and-judged-x2",), SMALLEST, ("--seeds", "5"), "smallest"),
    (("rare128-judged-x4",), SMALLEST, ("--seeds", "5"), "smallest"),
    (("rare128-attribute-guided-x4",), SMALLEST, ("--seeds", "5"), "smallest"),
    *((DRAW_ARMS, SMALLEST, ("--seeds", "1", "--subset-draw", str(draw)), f"draw-{draw}") for draw in DRAWS),
    *(((OWN_MASK_ARM,), SMALLEST, ("--seeds", "1", "--subset-draw", str(draw)), f"draw-{draw}") for draw in DRAWS),
    *((FULL_ARMS, SMALLEST, ("--seeds", "1", "--subset-draw", str(draw), *FULL_LENGTH), f"full-{draw}")
      for draw in DRAWS),
)


def group_of(phase: tuple) -> str:
    return phase[3] if len(phase) > 3 else "curve"


def arms_of(group: str) -> tuple[str, ...]:
    """The group's arms in phase order, each once (an arm in two phases is one --arm)."""
    return tuple(dict.fromkeys(arm for phase in PHASES if group_of(phase) == group for arm in phase[0]))


ARMS = tuple(dict.fromkeys(arm for group in GROUPS for arm in arms_of(group)))
# Arms with their own synthetic:real ratio (--arm-ratio; the others: 1), and mixes of other arms' pools (--mix; a mix
# has no job file): the same in every call, the phase that trains them and the report of all arms.
ARM_RATIOS = {"copy-paste-x2": 2.0, "judged-and-copy-paste": 2.0, "synthetic-judged-x6": 3.0,
              "compact128-judged-x4": 2.0, "attributes-judged-x4": 2.0,
              "lift128-judged-x4": 2.0, "default-judged-x4": 2.0, "guided-judged-x4": 2.0,
              "removal-judged-1in8": 0.125, "copy-paste-x2-and-judged-x2": 4.0,
              "rare128-judged-x4": 2.0, "rare128-attribute-guided-x4": 2.0, OWN_MASK_ARM: 2.0}
MIXES = {"judged-and-copy-paste": ("copy-paste", "synthetic-judged-x4"),
         "copy-paste-x2-and-judged-x2": ("copy-paste-x2", "default-judged-x4")}
# Arms that run another arm's job file under a name of their own (their own ratio, their own pool and results).
JOB_OF = {"default-judged-x4": "synthetic-judged-x4", "removal-judged-1in8": "removal-judged"}
# Per group, the fraction whose generated arms are split into test frames the generator never trained on and the
# ones it did (seen_unseen.md beside the report: evaluations/curve_seen_unseen.py), against real and copy-paste ×2.
# The held-out list is the default model's; the candidates fine-tuned from it hold out the same hash-chosen frames.
SEEN_UNSEEN = {"curve": ("0.1", ("synthetic-judged-x4-ratio2", "lift128-judged-x4")),
               "smallest": (SMALLEST, ("default-judged-x4", "guided-judged-x4", "rare128-judged-x4",
                                       "rare128-attribute-guided-x4"))}
SEEN_UNSEEN_BASES = ("real", "copy-paste-x2")
GENERATOR_HELD_OUT = REPO / "training_runs" / "compact-anneal" / "model" / "held_out_frames.txt"


def job_file(arm: str) -> Path:
    return JOBS / f"{JOB_OF.get(arm, arm)}.toml"


def link_split(data: Path, work: Path) -> None:
    from engine.evaluation import segdata

    names = sorted(p.name for p in (data / "images").iterdir())
    kept, held = segdata.holdout(names)
    for split, indices in (("train", kept), ("test", held)):
        for sub in ("images", "masks"):
            (work / split / sub).mkdir(parents=True, exist_ok=True)
            for index in indices:
                target = work / split / sub / names[index]
                if not target.exists():
                    target.symlink_to((data / sub / names[index]).resolve())


def copy_tree(source: Path, target: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in source.glob(pattern):
            if path.is_file():
                destination = target / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="where the split, the arms and the runs live")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "kvasir-seg")
    parser.add_argument("--normals", type=Path, default=REPO.parent / "shared" / "data" / "normal")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plan", action="store_true", help="print each phase's plan and stop")
    parser.add_argument("--collect", action="store_true",
                        help="after an evaluation was stopped: write each group's report of every finished run and "
                        "copy them and the results into evaluations/ (the same as --report-only; copying the work "
                        "folder's report as it was would commit the stopped phase's partial one)")
    parser.add_argument("--phase", type=int, action="append", default=[], choices=range(1, len(PHASES) + 1),
                        metavar="N", help=f"run only phase N (1–{len(PHASES)}; repeatable), then the report: on a "
                        "fresh machine the earlier phases would regenerate their arms' variants only to reuse their "
                        "finished runs")
    parser.add_argument("--report-only", action="store_true",
                        help="skip the phases: one report of every run finished so far (nothing trains), then collect; "
                        "for a session that stops between phases")
    args = parser.parse_args()
    work = args.work.resolve()
    if args.collect:  # a stopped phase leaves its own partial report in WORK: write every group's full one first
        args.report_only = True
    link_split(args.data.resolve(), work)
    for out_name, committed, _, _ in GROUPS.values():  # runs finished in earlier sessions
        copy_tree(committed, work / out_name, ("results/**/*.json",))

    def base(group: str) -> list[str]:
        return [sys.executable, str(REPO / "main.py"), "evaluate", "--train", str(work / "train"),
                "--test", f"kvasir={work / 'test'}", "--normals", str(args.normals.resolve()),
                "--out", str(work / GROUPS[group][0]), "--threads", str(args.threads)]

    chosen = [phase for number, phase in enumerate(PHASES, 1) if not args.phase or number in args.phase]
    for phase in () if args.report_only else chosen:
        arms, fractions, flags = phase[:3]
        missing = list(filter(None, map(missing_model, arms)))  # reads each arm's job file once
        if missing:
            print(f"skipping the phase of {', '.join(arms)}: {'; '.join(missing)}")
            continue
        command = [*base(group_of(phase)), *arm_flags(arms), "--real-fractions", fractions, *flags]
        code = subprocess.call(command + (["--plan"] if args.plan else []), cwd=REPO)
        if not args.plan:
            collect(group_of(phase), work)
        if code != 0:
            return code
    if args.plan:
        return 0
    code = 0
    for group, (out_name, _, fractions, ratios) in GROUPS.items():
        if not any((work / out_name / "results").glob("**/*.json")):
            continue  # a group none of whose phases has run (a draw not reached yet): no empty report
        reported = tuple(arm for arm in arms_of(group) if not missing_model(arm))
        ablation = ["--ratio-ablation", ratios] if ratios else []
        result = subprocess.call([*base(group), *arm_flags(reported), "--real-fractions", fractions, *ablation,
                                  *report_flags(group), "--report-only"], cwd=REPO)
        collect(group, work)
        code = code or result  # every group's report is written; the first failure is the exit status
    return code


def report_flags(group: str) -> list[str]:
    """A group's report flags from its phases: ``--seeds N`` when its phases' most seeds is not evaluate's default
    (phase 15's 8; a draw's 1), else nothing (the report as it always was; an arm run on fewer seeds is reported over
    those it has); ``--subset-draw K`` for a draw's group; ``--patience N`` where its phases train with their own
    (the runs' settings must match for the report to take them)."""
    flags = [phase[2] for phase in PHASES if group_of(phase) == group]
    counts = [int(f[f.index("--seeds") + 1]) for f in flags if "--seeds" in f]
    most = max(counts, default=DEFAULT_SEEDS)
    draws = {f[f.index("--subset-draw") + 1] for f in flags if "--subset-draw" in f}
    patience = {f[f.index("--patience") + 1] for f in flags if "--patience" in f}
    return (["--seeds", str(most)] if most != DEFAULT_SEEDS else []) + [
        flag for draw in sorted(draws) for flag in ("--subset-draw", draw)] + [
        flag for value in sorted(patience) for flag in ("--patience", value)]


def missing_model(arm: str) -> str:
    """What the arm lacks, in one line, when its job file names a model that is not there (issue 25's candidates live
    in .bench/, made by a make target that the job file's comment names); "" when it can run (the default model)."""
    from engine.jobs.spec import read_job_file

    if arm in MIXES:
        return "; ".join(filter(None, (missing_model(part) for part in MIXES[arm])))
    job = job_file(arm)
    model = read_job_file(job).get("model")  # relative to the job file, resolved as the batch job resolves it
    if model is None or Path(model).exists():
        return ""
    return f"{arm} needs its model {Path(model).relative_to(REPO)} (named in {job.relative_to(REPO)}; see its comment)"


def arm_flags(arms: tuple[str, ...]) -> list[str]:
    """The flags that name these arms: --arm for each arm with a job file (a mix's arms too: it draws on their
    pools; their finished runs are reused), --mix for each mix, --arm-ratio where an arm has its own ratio."""
    jobs = dict.fromkeys(part for arm in arms for part in MIXES.get(arm, (arm,)))
    flags = [flag for arm in jobs for flag in ("--arm", f"{arm}={job_file(arm)}")]
    flags += [flag for arm in arms if arm in MIXES for flag in ("--mix", f"{arm}={'+'.join(MIXES[arm])}")]
    flags += [flag for arm in dict.fromkeys([*jobs, *arms]) if arm in ARM_RATIOS
              for flag in ("--arm-ratio", f"{arm}={ARM_RATIOS[arm]:g}")]
    return flags


def collect(group: str, work: Path) -> None:
    out_name, committed, _, _ = GROUPS[group]
    copy_tree(work / out_name, committed, ("results/**/*.json", "report.json", "report.html", "learning_curve.png",
                                           "evaluation.json"))
    write_seen_unseen(group, committed)
    if group.startswith("draw-"):
        write_draws_summary()
    if group.startswith("full-"):
        write_full_length_summary()


def write_draws_summary() -> Path:
    """kvasir-curve-draws/summary.md: phases 20–29's comparison over the draws finished so far (curve_draws.py); and
    own-mask-summary.md: phases 30–39's, once two draws have its arm."""
    if len(list(DRAWS_COMMITTED.glob(f"draw-*/results/{SMALLEST}/{OWN_MASK_ARM}-seed*.json"))) >= 2:
        write_summary(
            DRAWS_COMMITTED / "own-mask-summary.md", (*DRAW_ARMS, OWN_MASK_ARM),
            "Phases 30–39 of evaluations/kvasir_curve.py, rewritten after every draw (evaluations/curve_draws.py "
            f"--versus default-judged-x4={OWN_MASK_ARM}): the batch job's own-mask synthetic (new polyps painted at "
            "the frames' own masks, judge-kept, 2 per real frame) on phases 20–29's 10 subset draws, one seed each. "
            f"Registered before any run: the primary result is {OWN_MASK_ARM} − copy-paste-x2 over the {len(DRAWS)} "
            "draws (paired t-test over draws); secondary: against default-judged-x4 (random masks) and real. The "
            "default-judged-x4 − copy-paste-x2 rows are phases 20–29's (summary.md).",
            (("default-judged-x4", OWN_MASK_ARM),))
    return write_summary(
        DRAWS_COMMITTED / "summary.md", DRAW_ARMS,
        "Phases 20–29 of evaluations/kvasir_curve.py, rewritten after every draw (evaluations/curve_draws.py): phase "
        f"15's comparison at fraction {SMALLEST} on {len(DRAWS)} other hash-drawn subsets of 36 training + 9 validation "
        "frames, one seed each. Registered before any run: the primary result is default-judged-x4 − copy-paste-x2 "
        f"over the {len(DRAWS)} draws (paired t-test over draws); the generator never trained on the 'unseen' test "
        f"frames ({GENERATOR_HELD_OUT.relative_to(REPO)}).")


def write_full_length_summary() -> Path:
    """kvasir-curve-draws-full/summary.md: phases 40–49's real and copy-paste ×2 trained to the step cap, over the
    draws finished so far (curve_draws.py)."""
    return write_summary(
        DRAWS_FULL / "summary.md", FULL_ARMS,
        "Phases 40–49 of evaluations/kvasir_curve.py, rewritten after every draw (evaluations/curve_draws.py): real and "
        f"copy-paste-x2 on phases 20–29's {len(DRAWS)} subset draws, one seed each, both trained to the 1500-step cap "
        "without early stopping (--patience 15). Registered before any run: the primary result is copy-paste-x2 − real "
        f"over the {len(DRAWS)} draws (paired t-test over draws); secondary: real here against phases 20–29's real, "
        "stopped early (kvasir-curve-draws/draw-K).")


def write_summary(target: Path, arms: tuple[str, ...], header: str, versus: tuple = ()) -> Path:
    """target (a draws summary beside the draw-K folders): the header, then curve_draws.py's summary of these arms
    over the draws finished so far (and of each (base, arm) in ``versus``)."""
    from curve_draws import draw_settings, summary
    from curve_seen_unseen import read_held_out

    from engine.fileio import atomic_write_bytes

    settings = draw_settings(target.parent, len(DRAWS), float(SMALLEST), {arm: job_file(arm) for arm in arms})
    target.parent.mkdir(parents=True, exist_ok=True)
    text = header + "\n\n" + summary(settings, read_held_out(GENERATOR_HELD_OUT), versus)
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


def write_seen_unseen(group: str, committed: Path) -> Path | None:
    """committed/seen_unseen.md: the group's generated arms against real and copy-paste ×2 on all test frames, on
    those the generator never trained on and on those it did (the arms and bases with results so far); None when
    there is nothing to compare yet."""
    from curve_seen_unseen import compare, markdown, read_held_out

    from engine.fileio import atomic_write_bytes

    if group not in SEEN_UNSEEN:
        return None
    fraction, arms = SEEN_UNSEEN[group]
    results = committed / "results" / fraction
    present = lambda arm: any(results.glob(f"{arm}-seed*.json"))  # noqa: E731
    arms = [arm for arm in arms if present(arm)]
    bases = [base for base in SEEN_UNSEEN_BASES if present(base)]
    if not arms or not bases:
        return None
    held_out = read_held_out(GENERATOR_HELD_OUT)
    tables = [markdown(compare(results, base, arms, held_out), base) for base in bases]
    text = (f"# Seen and unseen test frames, fraction {fraction}\n\nWritten by evaluations/kvasir_curve.py from "
            f"results/{fraction}: each generated arm's paired difference per seed on all test frames, on the "
            f"{len(held_out)} frames the generator never trained on ({GENERATOR_HELD_OUT.relative_to(REPO)}) and on "
            "the others (evaluations/curve_seen_unseen.py; p over seeds by a paired t-test, over frames by "
            "Wilcoxon).\n\n" + "\n\n".join(tables) + "\n")
    target = committed / "seen_unseen.md"
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


if __name__ == "__main__":
    raise SystemExit(main())
