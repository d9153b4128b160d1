"""The built app (installer/): the smoke test of dist/PolypForge, and the window's test-only auto-quit.

The smoke test runs only when the built app exists (after `make installer`) or when asked with
POLYPFORGE_INSTALLER_TEST=1 (then it builds the app first: ~40 s); otherwise it is skipped, so `make test`
does not pay for a build. `make installer-test` runs installer/smoke_test.py directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dist" / "PolypForge" / ("PolypForge.exe" if os.name == "nt" else "PolypForge")
ASKED = os.environ.get("POLYPFORGE_INSTALLER_TEST") == "1"


@pytest.fixture(scope="module")
def built_app() -> Path:
    if not APP.is_file():
        if not ASKED:
            pytest.skip(f"{APP} not built (make installer, or POLYPFORGE_INSTALLER_TEST=1 to build it here)")
        subprocess.run(["bash", str(REPO / "installer" / "build.sh"), "cpu"], cwd=REPO, check=True, timeout=900)
    return APP


def test_built_app_smoke(built_app, tmp_path):
    """--version, doctor, an offline --batch job checked (COCO loads, counts agree), the window offscreen."""
    out_json = tmp_path / "smoke.json"
    args = [sys.executable, str(REPO / "installer" / "smoke_test.py"), "--app", str(built_app), "--json-out", str(out_json)]
    if not sys.platform.startswith("linux"):
        args.append("--no-unshare")
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert result["passed"] and result["dataset"]["ok_variants"] == 4
    assert set(result["times_s"]) == {"--version", "doctor --json", "doctor", "--batch", "report", "window (offscreen)"}


def test_built_app_holds_no_export_stack(built_app):
    internal = built_app.parent / "_internal"
    for name in ("torch", "diffusers", "transformers", "optimum", "onnx"):
        assert not (internal / name).exists(), f"{name} was bundled into the app"
    assert (built_app.parent / "models" / "demo-sd-inpaint" / "bundle.json").is_file()


def test_quit_after_env_closes_the_window(tmp_path):
    """POLYPFORGE_QUIT_AFTER_MS (the smoke test's way to close the window) works from the source tree too."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "POLYPFORGE_QUIT_AFTER_MS": "200", "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from desktop.app import run_app; sys.exit(run_app([]))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_app_and_the_command_line_start_without_what_the_installer_leaves_out(tmp_path):
    """The installed app leaves the torch stack and engine's torch packages out (installer/polypforge.spec's
    EXCLUDES). Building main.py's parser and importing the desktop's modules must not need any of them: a module-level
    import of engine.evaluation in the command wiring once broke the built app only in `make installer-test`."""
    import ast

    spec = (REPO / "installer" / "polypforge.spec").read_text(encoding="utf-8")
    tree = ast.parse(spec)
    excludes = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "EXCLUDES" for t in node.targets))
    assert "engine.evaluation" in excludes and "torch" in excludes
    script = f"""
import importlib.abc, pkgutil, sys
LEFT_OUT = {[e for e in excludes if not e.startswith("PySide6.") and e != "desktop.screenshots"]!r}
class LeftOut(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == e or name.startswith(e + ".") for e in LEFT_OUT):
            raise ImportError(f"{{name}} is not in the installed app")
sys.meta_path.insert(0, LeftOut())
import main
main.build_parser()
import desktop
for module in pkgutil.walk_packages(desktop.__path__, "desktop."):
    if module.name != "desktop.screenshots" and not module.name.startswith("desktop.screenshots."):
        __import__(module.name)
print("started without", len(LEFT_OUT), "left-out packages")
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "started without" in completed.stdout
