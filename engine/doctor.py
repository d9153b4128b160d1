"""``main.py doctor``: one screen that says whether this PC can run PolypForge, and what to fix if not.

It reports the app and engine versions, Python, onnxruntime (version, flavour, compiled-in providers), whether
the CUDA / cuDNN / TensorRT libraries load (ctypes, naming the file that is missing), each model bundle found
with kind, size and integrity (sha256 check by read_bundle), the free disk at the output location and a
one-line verdict. ``--json`` gives the same as JSON for a support ticket.

It imports no torch and no Qt, and never raises for a broken environment: every problem is a line of the report.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIN_FREE_BYTES = 2 * 1024**3  # below this a batch job of full-size frames may run out of room
LOW_FREE_BYTES = 10 * 1024**3

# The GPU libraries onnxruntime-gpu needs (CUDA 12 or 13 + cuDNN 9; TensorRT 10 for the TensorRT provider).
# Each group loads if any one of its names loads. (Linux names, Windows names.)
GPU_LIBRARIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "NVIDIA driver": (("libcuda.so.1",), ("nvcuda.dll",)),
    "CUDA runtime": (("libcudart.so.12", "libcudart.so.13"), ("cudart64_12.dll", "cudart64_13.dll")),
    "cuBLAS": (("libcublas.so.12", "libcublas.so.13"), ("cublas64_12.dll", "cublas64_13.dll")),
    "cuBLASLt": (("libcublasLt.so.12", "libcublasLt.so.13"), ("cublasLt64_12.dll", "cublasLt64_13.dll")),
    "cuFFT": (("libcufft.so.11", "libcufft.so.12"), ("cufft64_11.dll", "cufft64_12.dll")),
    "cuDNN": (("libcudnn.so.9",), ("cudnn64_9.dll",)),
    "TensorRT": (("libnvinfer.so.10",), ("nvinfer_10.dll",)),
}
# onnxruntime's own provider libraries, inside onnxruntime/capi (only onnxruntime-gpu ships the CUDA/TensorRT ones).
ORT_PROVIDER_LIBRARIES = {
    "shared": ("libonnxruntime_providers_shared.so", "onnxruntime_providers_shared.dll"),
    "cuda": ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll"),
    "tensorrt": ("libonnxruntime_providers_tensorrt.so", "onnxruntime_providers_tensorrt.dll"),
}


@dataclass
class LibraryCheck:
    name: str  # what it is ("cuDNN", "onnxruntime CUDA provider")
    loaded: bool
    file: str = ""  # the file that loaded, or the first name tried when none did
    problem: str = ""  # the loader's message (names the missing dependency)


@dataclass
class BundleCheck:
    path: str
    name: str
    kind: str = ""
    size_bytes: int = 0
    precision: str = ""
    integrity: str = ""  # ok | broken | not checked
    problem: str = ""
    recommends_judge: str = ""  # the judge its bundle.json names for its jobs (engine.judge.model_gate), if any
    training_frames: int | None = None  # frames its training_frames.txt lists (engine.bundle.training_frames), if any


@dataclass
class Report:
    app: str
    engine_version: str
    frozen: bool
    app_dir: str
    python: str
    platform: str
    onnxruntime: dict[str, Any] = field(default_factory=dict)
    gpu_libraries: list[LibraryCheck] = field(default_factory=list)
    provider_libraries: list[LibraryCheck] = field(default_factory=list)
    gpu_session: dict[str, Any] = field(default_factory=dict)
    bundle_folders: list[str] = field(default_factory=list)
    bundles: list[BundleCheck] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verdict: str = ""
    status: str = ""  # ok | warning | problem

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- libraries
def _nvidia_wheel_dirs() -> list[Path]:
    """Library folders of the nvidia-* pip wheels (onnxruntime-gpu[cuda,cudnn]), where onnxruntime also looks."""
    dirs: list[Path] = []
    for entry in sys.path:
        root = Path(entry) / "nvidia"
        if root.is_dir():
            for sub in sorted(root.iterdir()):
                for name in ("lib", "bin"):
                    if (sub / name).is_dir():
                        dirs.append(sub / name)
    return dirs


def try_load(names: tuple[str, ...], extra_dirs: list[Path] | None = None) -> tuple[bool, str, str]:
    """Load the first of ``names`` that loads (system search path, then ``extra_dirs``).

    Returns (loaded, file, problem): problem is the first loader message, which names the missing file."""
    first_problem = ""
    for name in names:
        candidates = [name] + [str(d / name) for d in (extra_dirs or []) if (d / name).exists()]
        for candidate in candidates:
            try:
                ctypes.CDLL(candidate)
            except OSError as exc:
                if not first_problem or (candidate != name and "cannot open shared object file" not in str(exc)):
                    first_problem = str(exc).strip() or f"{candidate}: cannot be loaded"
                continue
            return True, candidate, ""
    return False, names[0], first_problem or f"{names[0]}: not found"


def check_gpu_libraries() -> list[LibraryCheck]:
    windows = sys.platform.startswith("win")
    extra = _nvidia_wheel_dirs()
    checks = []
    for label, (linux_names, windows_names) in GPU_LIBRARIES.items():
        loaded, file, problem = try_load(windows_names if windows else linux_names, extra)
        checks.append(LibraryCheck(label, loaded, file, problem))
    return checks


def check_provider_libraries(capi_dir: Path | None) -> list[LibraryCheck]:
    """Load onnxruntime's provider libraries that this onnxruntime ships; the message names what is missing."""
    if capi_dir is None:
        return []
    windows = sys.platform.startswith("win")
    checks = []
    for label, (linux_name, windows_name) in ORT_PROVIDER_LIBRARIES.items():
        path = capi_dir / (windows_name if windows else linux_name)
        if not path.exists():
            continue  # the CPU flavour ships no CUDA/TensorRT provider: not a problem
        if label != "shared":
            # the CUDA/TensorRT provider libraries resolve their symbols from the shared one: load it globally
            shared = capi_dir / (ORT_PROVIDER_LIBRARIES["shared"][1 if windows else 0])
            try:
                ctypes.CDLL(str(shared), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            except OSError:
                pass
        loaded, _, problem = try_load((str(path),))
        checks.append(LibraryCheck(f"onnxruntime {label} provider", loaded, path.name, problem))
    return checks


# ---------------------------------------------------------------------------------------------- pieces
def _onnxruntime_info() -> tuple[dict[str, Any], Path | None]:
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - a broken install is a line of the report
        return {"importable": False, "problem": f"{type(exc).__name__}: {exc}"}, None
    capi = Path(ort.__file__).resolve().parent / "capi"
    providers = list(ort.get_available_providers())
    gpu_build = any((capi / name).exists() for pair in (ORT_PROVIDER_LIBRARIES["cuda"],) for name in pair)
    info = {
        "importable": True,
        "version": ort.__version__,
        "flavour": "gpu (onnxruntime-gpu)" if gpu_build or "CUDAExecutionProvider" in providers else "cpu (onnxruntime)",
        "device": ort.get_device(),
        "available_providers": providers,
        "path": str(capi.parent),
    }
    return info, capi


def _gpu_session_check(info: dict[str, Any], folders: list[Path]) -> dict[str, Any]:
    """With a GPU build: open the small demo feature model on CUDA and report what onnxruntime really runs on."""
    providers = info.get("available_providers", [])
    if "CUDAExecutionProvider" not in providers:
        return {}
    model = next((f / "demo-dinov2" / "model.onnx" for f in folders if (f / "demo-dinov2" / "model.onnx").is_file()), None)
    if model is None:
        return {"checked": False, "note": "no demo-dinov2 bundle to open a test session with"}
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        active = session.get_providers()
    except Exception as exc:  # noqa: BLE001
        return {"checked": True, "cuda_works": False, "problem": str(exc).strip().splitlines()[0]}
    return {"checked": True, "cuda_works": active[0] == "CUDAExecutionProvider", "active_providers": active}


def _bundle_folders() -> list[Path]:
    from engine.bundle.format import bundle_search_folders, frozen_app_dir

    folders = list(bundle_search_folders())
    app_dir = frozen_app_dir()
    if app_dir is not None and app_dir / "models" not in folders:
        folders.append(app_dir / "models")
    return folders


def check_bundles(folders: list[Path], verify_hashes: bool = True) -> list[BundleCheck]:
    from engine.bundle.format import MANIFEST_NAME, read_bundle
    from engine.bundle.training_frames import training_frames_of
    from engine.judge.model_gate import recommended_gate

    checks: list[BundleCheck] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for manifest in sorted(folder.glob(f"*/{MANIFEST_NAME}")):
            root = manifest.parent.resolve()
            if root in seen:
                continue
            seen.add(root)
            check = BundleCheck(path=str(root), name=root.name)
            try:
                bundle = read_bundle(root, verify_hashes=verify_hashes)
                info = bundle.describe()
            except Exception as exc:  # noqa: BLE001 - BundleError names the file
                check.integrity, check.problem = "broken", str(exc)
                try:
                    check.kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind", "")
                except Exception:  # noqa: BLE001, S110 - unreadable bundle.json: the problem above says so
                    pass
            else:
                check.name, check.kind, check.size_bytes = info["name"], info["kind"], info["size_bytes"]
                check.precision = info["precision"]
                check.integrity = "ok" if verify_hashes else "not checked"
                try:
                    gate = recommended_gate(bundle.manifest, manifest)
                except Exception as exc:  # noqa: BLE001 - BundleError names the file
                    check.integrity, check.problem = "broken", str(exc)
                else:
                    check.recommends_judge = gate.bundle if gate is not None else ""
                if check.integrity != "broken":
                    try:
                        trained = training_frames_of(bundle)
                    except Exception as exc:  # noqa: BLE001 - BundleError names the file
                        check.integrity, check.problem = "broken", str(exc)
                    else:
                        check.training_frames = len(trained) if trained is not None else None
            checks.append(check)
    return checks


def check_output(location: Path) -> dict[str, Any]:
    probe = location.expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return {"location": str(location), "checked_at": str(probe), "problem": str(exc)}
    return {
        "location": str(location),
        "checked_at": str(probe),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "writable": os.access(probe, os.W_OK),
    }


# ---------------------------------------------------------------------------------------------- report
def run_doctor(output: Path | None = None, verify_hashes: bool = True) -> Report:
    from engine import __version__
    from engine.bundle.format import frozen_app_dir

    app_dir = frozen_app_dir()
    report = Report(
        app=f"PolypForge {__version__}",
        engine_version=__version__,
        frozen=app_dir is not None,
        app_dir=str(app_dir or Path(__file__).resolve().parents[1]),
        python=f"{platform.python_version()} ({platform.python_implementation()}, {sys.executable})",
        platform=platform.platform(),
    )
    report.onnxruntime, capi = _onnxruntime_info()
    report.gpu_libraries = check_gpu_libraries()
    report.provider_libraries = check_provider_libraries(capi)
    folders = _bundle_folders()
    report.bundle_folders = [str(f) for f in folders]
    report.gpu_session = _gpu_session_check(report.onnxruntime, folders) if capi else {}
    report.bundles = check_bundles(folders, verify_hashes=verify_hashes)
    report.output = check_output(output if output is not None else Path.cwd())
    _judge(report)
    return report


def _missing(checks: list[LibraryCheck]) -> list[LibraryCheck]:
    return [c for c in checks if not c.loaded]


def _judge(report: Report) -> None:
    ort_info = report.onnxruntime
    problems, warnings = report.problems, report.warnings
    if not ort_info.get("importable"):
        problems.append(f"onnxruntime does not load: {ort_info.get('problem')}")
    gpu_build = ort_info.get("flavour", "").startswith("gpu")
    runs_on = "CPU"
    if gpu_build:
        needed = [c for c in report.gpu_libraries if c.name != "TensorRT"] + [
            c for c in report.provider_libraries if "tensorrt" not in c.name]
        missing = _missing(needed)
        session = report.gpu_session
        if missing:
            first = missing[0]
            warnings.append(f"GPU build, but {first.name} does not load ({first.problem or first.file}): "
                            "jobs run on the CPU (see installer/README.md for the CUDA/cuDNN versions needed)")
        elif session.get("checked") and not session.get("cuda_works"):
            warnings.append(f"GPU build, CUDA libraries load, but a CUDA session failed "
                            f"({session.get('problem') or session.get('active_providers')}): jobs run on the CPU")
        else:
            runs_on = "CUDA"
    inpaint = [b for b in report.bundles if b.kind in ("sd-inpaint", "pixel-inpaint")]
    usable = [b for b in inpaint if b.integrity in ("ok", "not checked")]
    for bundle in report.bundles:
        if bundle.integrity == "broken":
            problems.append(f"bundle {bundle.name}: {bundle.problem}")
    judges = {key for b in report.bundles if b.kind == "segmenter" and b.integrity in ("ok", "not checked")
              for key in (b.name, Path(b.path).name, str(Path(b.path).resolve()))}
    for bundle in usable:
        wanted = bundle.recommends_judge
        if wanted and wanted not in judges and str(Path(wanted).expanduser().resolve()) not in judges:
            warnings.append(f"bundle {bundle.name} recommends the judge {wanted}, which is not installed intact "
                            "here: its jobs from --batch and the app stop before they start unless run with "
                            "--no-judge (or with a judge of your own)")
    if not usable:
        problems.append(f"no usable inpainting bundle in {', '.join(report.bundle_folders)}")
    elif all(b.name.startswith("demo-") for b in usable):
        warnings.append("only the demo bundle (random weights: its output is noise) is installed; put a real "
                        "bundle in the models folder")
    out = report.output
    if "problem" in out:
        problems.append(f"output location {out['location']}: {out['problem']}")
    else:
        if not out.get("writable"):
            problems.append(f"output location {out['checked_at']} is not writable")
        free = out.get("free_bytes", 0)
        if free < MIN_FREE_BYTES:
            problems.append(f"only {_size(free)} free at {out['checked_at']} (a job needs at least {_size(MIN_FREE_BYTES)})")
        elif free < LOW_FREE_BYTES:
            warnings.append(f"{_size(free)} free at {out['checked_at']}: enough for small jobs only")
    if problems:
        report.status = "problem"
        report.verdict = f"NOT READY: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
    elif warnings:
        report.status = "warning"
        report.verdict = f"READY on {runs_on}, with a warning: {warnings[0]}"
    else:
        report.status = "ok"
        report.verdict = f"READY: jobs run on {runs_on}"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def format_report(report: Report) -> str:
    ort_info = report.onnxruntime
    lines = [
        f"{report.app}  (engine {report.engine_version}, {'built app' if report.frozen else 'source tree'}: {report.app_dir})",
        f"Python       {report.python}",
        f"Platform     {report.platform}",
    ]
    if ort_info.get("importable"):
        lines.append(f"onnxruntime  {ort_info['version']}, {ort_info['flavour']}; providers: "
                     f"{', '.join(p.replace('ExecutionProvider', '') for p in ort_info['available_providers'])}")
    else:
        lines.append(f"onnxruntime  DOES NOT LOAD: {ort_info.get('problem')}")
    loaded = [f"{c.name} ({c.file})" for c in report.gpu_libraries if c.loaded]
    missing = [f"{c.name}: {c.file}" for c in report.gpu_libraries if not c.loaded]
    cpu_build = not ort_info.get("flavour", "").startswith("gpu")
    lines.append(f"GPU libs     {'(not used by this CPU build) ' if cpu_build else ''}loaded: {', '.join(loaded) or 'none'}")
    if missing:
        lines.append(f"             missing: {'; '.join(missing)}")
    for check in report.provider_libraries:
        state = "loads" if check.loaded else f"does not load: {check.problem}"
        lines.append(f"             {check.name} ({check.file}) {state}")
    if report.gpu_session:
        session = report.gpu_session
        lines.append(f"             CUDA test session: {'works' if session.get('cuda_works') else session}")
    lines.append(f"Bundles in   {', '.join(report.bundle_folders)}")
    if not report.bundles:
        lines.append("             none found")
    for b in report.bundles:
        detail = f"{b.kind or '?':10s} {_size(b.size_bytes):>9s}  {b.precision or '':4s}  integrity {b.integrity}"
        if b.recommends_judge:
            detail += f"  judge {b.recommends_judge}"
        if b.training_frames is not None:
            detail += f"  lists {b.training_frames} training frames"
        lines.append(f"  {b.name:24s} {detail}" + (f": {b.problem}" if b.problem else ""))
    out = report.output
    if "free_bytes" in out:
        lines.append(f"Output       {out['checked_at']}: {_size(out['free_bytes'])} free of {_size(out['total_bytes'])}"
                     f"{'' if out.get('writable') else ', NOT writable'}")
    else:
        lines.append(f"Output       {out.get('location')}: {out.get('problem')}")
    for text in report.warnings[1:] if report.status == "warning" else report.warnings:
        lines.append(f"warning: {text}")
    for text in report.problems[1:]:
        lines.append(f"problem: {text}")
    lines.append(f"Verdict      {report.verdict}")
    return "\n".join(lines)


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=1, ensure_ascii=False)
