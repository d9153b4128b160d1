"""Execution-provider choice: TensorRT → CUDA → CPU, with fallback and a plain statement of what runs.

onnxruntime lists the providers it was *compiled* with (``get_available_providers``), not the ones whose
libraries load: onnxruntime-gpu on a PC without matching CUDA/cuDNN lists CUDA, then silently runs on CPU.
So the choice is confirmed after a session exists, from ``session.get_providers()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from engine.bundle.hashing import cache_dir

PROVIDER_CHOICES = ("auto", "cpu", "cuda", "tensorrt")
ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in ORT_NAMES.items()}
PREFERENCE = ("tensorrt", "cuda", "cpu")


@dataclass(frozen=True)
class ProviderPlan:
    """What was asked for and the ordered provider list handed to onnxruntime."""

    requested: str
    providers: list  # names or (name, options) tuples, as InferenceSession takes them

    def first_choice(self) -> str:
        first = self.providers[0]
        return SHORT_NAMES[first[0] if isinstance(first, tuple) else first]


def plan_providers(requested: str = "auto", fp16: bool = False) -> ProviderPlan:
    """Ordered providers for a request; CPU is always last so a session can always be made."""
    if requested not in PROVIDER_CHOICES:
        raise ValueError(f"provider {requested!r} is not one of {', '.join(PROVIDER_CHOICES)}")
    compiled = set(ort.get_available_providers())
    if requested == "auto":
        wanted = [p for p in PREFERENCE if ORT_NAMES[p] in compiled]
    else:
        start = PREFERENCE.index(requested)
        wanted = [p for p in PREFERENCE[start:] if ORT_NAMES[p] in compiled or p == requested]
    if "cpu" not in wanted:
        wanted.append("cpu")
    providers: list = []
    for short in wanted:
        name = ORT_NAMES[short]
        if short == "tensorrt":
            engine_cache = Path(cache_dir()) / "tensorrt"
            providers.append(
                (
                    name,
                    {
                        "trt_fp16_enable": bool(fp16),
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(engine_cache),
                    },
                )
            )
        else:
            providers.append(name)
    return ProviderPlan(requested=requested, providers=providers)


def fallback_note(plan: ProviderPlan, active: str) -> str | None:
    """A sentence for the curator when the session runs on something other than the first choice."""
    wanted = plan.first_choice()
    if active == wanted:
        return None
    if wanted in ("cuda", "tensorrt"):
        return (
            f"{wanted.upper()} was requested but could not be loaded (missing or mismatched CUDA/cuDNN/TensorRT "
            f"libraries); running on {active.upper()} instead. `main.py doctor` shows which library is missing."
        )
    return f"running on {active.upper()} instead of {wanted.upper()}"

