#!/usr/bin/env bash
# Build the PolypForge app folder with PyInstaller (one-folder, UPX off).
#   installer/build.sh [cpu|gpu] [--archive]
# cpu: uses $BUILD_PYTHON (default .venv/bin/python, which must hold `onnxruntime`, not `onnxruntime-gpu`) → dist/PolypForge
# gpu: makes a build venv build/venv-gpu with onnxruntime-gpu and no torch              → dist/gpu/PolypForge
# --archive also writes dist/PolypForge-<version>-<os>-<arch>-<flavour>.tar.gz (the one file to carry to a PC).
set -euo pipefail
cd "$(dirname "$0")/.."
FLAVOUR=cpu ARCHIVE=0
for arg in "$@"; do
  case "$arg" in
    cpu|gpu) FLAVOUR=$arg ;;
    --archive) ARCHIVE=1 ;;
    *) echo "usage: installer/build.sh [cpu|gpu] [--archive]" >&2; exit 2 ;;
  esac
done
PYTHON=${BUILD_PYTHON:-.venv/bin/python}
DIST=dist
if [ "$FLAVOUR" = gpu ]; then
  DIST=dist/gpu
  if [ ! -x build/venv-gpu/bin/python ]; then
    python3 -m venv build/venv-gpu
    build/venv-gpu/bin/python -m pip install --quiet --disable-pip-version-check -e ".[gpu,desktop]" "pyinstaller>=6.10"
  fi
  PYTHON=build/venv-gpu/bin/python
fi
"$PYTHON" -m PyInstaller --version >/dev/null 2>&1 || "$PYTHON" -m pip install --quiet --disable-pip-version-check "pyinstaller>=6.10"
# Exactly one onnxruntime flavour in the build environment (both install into the same onnxruntime/ folder).
"$PYTHON" - "$FLAVOUR" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
def has(name):
    try:
        version(name); return True
    except PackageNotFoundError:
        return False
flavour = sys.argv[1]
cpu, gpu = has("onnxruntime"), has("onnxruntime-gpu")
if cpu and gpu:
    sys.exit("error: both onnxruntime and onnxruntime-gpu are installed in the build environment; uninstall one")
if (flavour == "cpu" and not cpu) or (flavour == "gpu" and not gpu):
    sys.exit(f"error: the {flavour} flavour needs {'onnxruntime' if flavour == 'cpu' else 'onnxruntime-gpu'} in {sys.executable}")
PY
mkdir -p build
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN --distpath "$DIST" --workpath "build/pyinstaller-$FLAVOUR" \
  installer/polypforge.spec
APP="$DIST/PolypForge"
VERSION=$("$APP/PolypForge" --version | awk '{print $2}')
"$PYTHON" - "$APP" "$FLAVOUR" <<'PY'
import json, platform, sys
from importlib.metadata import version
app, flavour = sys.argv[1], sys.argv[2]
ort = "onnxruntime" if flavour == "cpu" else "onnxruntime-gpu"
info = {"flavour": flavour, "onnxruntime": f"{ort} {version(ort)}", "python": platform.python_version(),
        "platform": platform.platform(), "pyinstaller": version("pyinstaller")}
open(f"{app}/BUILD_INFO.json", "w").write(json.dumps(info, indent=1) + "\n")
PY
echo "built $APP ($(du -sh "$APP" | cut -f1), PolypForge $VERSION, $FLAVOUR)"
if [ "$ARCHIVE" = 1 ]; then
  NAME="PolypForge-$VERSION-$(uname -s | tr A-Z a-z)-$(uname -m)-$FLAVOUR.tar.gz"
  tar -C "$DIST" -czf "$DIST/$NAME.tmp" PolypForge && mv "$DIST/$NAME.tmp" "$DIST/$NAME"
  echo "archive $DIST/$NAME ($(du -sh "$DIST/$NAME" | cut -f1))"
fi
