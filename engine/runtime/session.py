"""One onnxruntime session per exported model part, with its input signature checked and feeds cast to it.

``OnnxPart`` knows the names, element types and ranks the ONNX file declares; ``expect`` checks them against
what the pipeline will feed (so a text-to-image U-Net given as an inpainting one fails on load, naming the
file, rather than deep inside the first step), and ``run`` casts each feed to the declared dtype.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.errors import BundleError
from engine.runtime.providers import SHORT_NAMES, ProviderPlan, fallback_note

ORT_TYPE_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: type
    shape: tuple  # ints for fixed dims, str or None for symbolic ones


def _spec(arg) -> TensorSpec:
    dtype = ORT_TYPE_TO_NUMPY.get(arg.type)
    if dtype is None:
        dtype = np.float32
    return TensorSpec(name=arg.name, dtype=dtype, shape=tuple(arg.shape))


class OnnxPart:
    """A loaded ONNX model part (text encoder, U-Net, VAE encoder or decoder)."""

    def __init__(self, path: Path, plan: ProviderPlan, threads: int | None = None, role: str = ""):
        self.path = Path(path)
        self.role = role or self.path.parent.name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: provider fallbacks are reported by us, in words
        if threads:
            options.intra_op_num_threads = int(threads)
        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=plan.providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(self.path, f"onnxruntime cannot load this model: {first_line}") from None
        self.load_seconds = time.perf_counter() - started
        self.inputs = {a.name: _spec(a) for a in self.session.get_inputs()}
        self.outputs = {a.name: _spec(a) for a in self.session.get_outputs()}
        self.active_provider = SHORT_NAMES.get(self.session.get_providers()[0], self.session.get_providers()[0])
        self.provider_note = fallback_note(plan, self.active_provider)

    def expect(self, inputs: dict[str, tuple], outputs: tuple[str, ...]) -> None:
        """Check declared inputs (name → expected shape, None for any dim) and output names; BundleError if not."""
        for name, expected_shape in inputs.items():
            spec = self.inputs.get(name)
            if spec is None:
                raise BundleError(
                    self.path,
                    f"the {self.role} has no input {name!r} (it takes {', '.join(self.inputs) or 'nothing'}): "
                    "not the model part this bundle slot needs",
                )
            if expected_shape is None:
                continue
            if len(spec.shape) != len(expected_shape):
                raise BundleError(
                    self.path,
                    f"the {self.role} input {name!r} has rank {len(spec.shape)} {list(spec.shape)}, "
                    f"expected rank {len(expected_shape)}",
                )
            for axis, (declared, wanted) in enumerate(zip(spec.shape, expected_shape)):
                if wanted is not None and isinstance(declared, int) and declared != wanted:
                    raise BundleError(
                        self.path,
                        f"the {self.role} input {name!r} has {declared} at axis {axis}, expected {wanted}",
                    )
        for name in outputs:
            if name not in self.outputs:
                raise BundleError(
                    self.path, f"the {self.role} has no output {name!r} (it gives {', '.join(self.outputs)})"
                )

    def dim(self, input_name: str, axis: int):
        return self.inputs[input_name].shape[axis]

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cast = {}
        for name, value in feeds.items():
            spec = self.inputs[name]
            array = np.asarray(value)
            if array.dtype != spec.dtype:
                array = array.astype(spec.dtype)
            if len(spec.shape) == 0 and array.ndim != 0:
                array = array.reshape(())
            cast[name] = array
        return self.session.run(output_names, cast)
