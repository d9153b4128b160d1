"""The inference path imports no torch/diffusers/transformers/Qt and opens no network connection."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

GENERATE_OFFLINE = textwrap.dedent(
    """
    import socket, sys
    def refuse(*args, **kwargs):
        raise AssertionError("the inference path tried to open a network connection")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import numpy as np
    from engine.pipelines import open_pipeline
    from engine.demo import DEMO_BUNDLE

    pipe = open_pipeline(sys.argv[1] if len(sys.argv) > 1 else DEMO_BUNDLE, provider="auto", purpose="inpaint")
    frame = np.full((96, 128, 3), 120, np.uint8)
    mask = np.zeros((96, 128), bool); mask[30:60, 40:90] = True
    result = pipe(frame, mask, steps=3, seed=0)
    assert result.image.shape == frame.shape
    heavy = sorted(m for m in ("torch", "diffusers", "transformers", "optimum", "PySide6", "ray") if m in sys.modules)
    print("HEAVY:" + ",".join(heavy))
    print("PROVIDER:" + pipe.provider)
    """
)


def test_generation_imports_no_torch_and_stays_offline():
    completed = subprocess.run(
        [sys.executable, "-c", GENERATE_OFFLINE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "HEAVY:\n" in completed.stdout, completed.stdout
    assert "PROVIDER:cpu" in completed.stdout


def test_engine_imports_no_qt():
    offenders = []
    for path in (REPO_ROOT / "engine").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                qt in stripped.split()[1] for qt in ("PySide6", "PyQt5", "PyQt6", "shiboken6")
            ):
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {stripped}")
    assert not offenders, offenders


def test_inference_modules_do_not_import_torch_at_module_level():
    """Everything under engine/ except the torch code (engine/export, engine/models, engine/training and the judge
    lab's training modules) imports without torch, and without ray (engine/jobs/ray_backend imports it when the
    Ray backend runs); the command-line wiring (engine/cli) too."""
    lab_torch = {"judge_task.py", "train_judge.py", "evaluate.py"}
    modules = [
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO_ROOT / "engine").rglob("*.py")
        if not {"export", "models", "training"} & set(p.relative_to(REPO_ROOT).parts)
        and not (p.parent.name == "evaluation" and p.name in lab_torch)
    ]
    code = "import sys, importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in sorted(modules))
    code += "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'ray') if m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "[]"


WITHOUT_RAY = textwrap.dedent(
    """
    import sys
    sys.modules["ray"] = None  # as on an install without the ray extra: `import ray` raises ImportError
    import main
    from engine.samples import generate_sample_set

    generate_sample_set(sys.argv[1] + "/in", count=1, seed=0, with_polyps_every=0)
    job = ["--batch", "--quiet", "--input", sys.argv[1] + "/in", "--mask-source", "random", "--steps", "1"]
    print("LOCAL:", main.main(job + ["--output", sys.argv[1] + "/local"]), flush=True)
    print("RAY:", main.main(job + ["--output", sys.argv[1] + "/ray", "--backend", "ray"]), flush=True)
    """
)


def test_a_local_batch_job_runs_without_ray_and_the_ray_backend_says_how_to_install_it(tmp_path):
    completed = subprocess.run([sys.executable, "-c", WITHOUT_RAY, str(tmp_path)], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "LOCAL: 0" in completed.stdout and "RAY: 2" in completed.stdout, completed.stdout
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert errors == ['error: backend ray needs Ray, which is not installed: pip install -e ".[ray]"'], completed.stderr
