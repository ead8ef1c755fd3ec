"""Running a TensorRT engine: device buffers, a CUDA stream, CUDA-event timing (GPU only).

Device memory comes from torch's CUDA tensors where torch with CUDA is installed, else from
cuda-python; both give raw device pointers that `IExecutionContext.set_tensor_address` takes.
Each call records four CUDA events, so the latency is known with and without the host-device
copies; `device_timings()` summarises them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeagent.backend import Session
from edgeagent.errors import BackendUnavailable, CalibrationError, InputError, UnsupportedModel
from edgeagent.ir import TensorSpec


def device_library() -> str | None:
    """Which library provides device memory here: "torch", "cuda-python" or None."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return "torch"
    if importlib.util.find_spec("cuda") is not None:
        return "cuda-python"
    return None


class _TorchDevice:
    """Buffers, stream and events through torch.cuda."""

    def __init__(self, index: int) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda", index)
        self.stream = torch.cuda.Stream(self.device)
        self.handle = self.stream.cuda_stream

    def alloc(self, nbytes: int):
        buffer = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        return buffer, buffer.data_ptr()

    def to_device(self, buffer, host: np.ndarray) -> None:
        source = self.torch.from_numpy(np.ascontiguousarray(host).reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            buffer[:source.numel()].copy_(source, non_blocking=True)

    def to_host(self, host: np.ndarray, buffer) -> None:
        target = self.torch.from_numpy(host.reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            target.copy_(buffer[:target.numel()], non_blocking=True)

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, event) -> None:
        event.record(self.stream)

    def elapsed_ms(self, start, end) -> float:
        return float(start.elapsed_time(end))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def free(self, buffer) -> None:
        del buffer


class _CudaPythonDevice:
    """Buffers, stream and events through cuda-python's runtime bindings."""

    def __init__(self, index: int) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.cudart = cudart
        self._check(cudart.cudaSetDevice(index))
        self.stream = self._check(cudart.cudaStreamCreate())
        self.handle = int(self.stream)

    def _check(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise BackendUnavailable(f"CUDA call failed: {self.cudart.cudaGetErrorString(error)[1]}")
        return values[0] if len(values) == 1 else values

    def alloc(self, nbytes: int):
        pointer = self._check(self.cudart.cudaMalloc(max(nbytes, 1)))
        return pointer, int(pointer)

    def to_device(self, buffer, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        self._check(self.cudart.cudaMemcpyAsync(buffer, host.ctypes.data, host.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def to_host(self, host: np.ndarray, buffer) -> None:
        self._check(self.cudart.cudaMemcpyAsync(host.ctypes.data, buffer, host.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def event(self):
        return self._check(self.cudart.cudaEventCreate())

    def record(self, event) -> None:
        self._check(self.cudart.cudaEventRecord(event, self.stream))

    def elapsed_ms(self, start, end) -> float:
        return float(self._check(self.cudart.cudaEventElapsedTime(start, end)))

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def free(self, buffer) -> None:
        self.cudart.cudaFree(buffer)


def open_device(index: int):
    library = device_library()
    if library == "torch":
        return _TorchDevice(index)
    if library == "cuda-python":
        return _CudaPythonDevice(index)
    raise BackendUnavailable("TensorRT needs device memory from torch (with CUDA) or cuda-python: "
                             "pip install cuda-python")


class TensorRTSession(Session):
    """An engine and one execution context behind the validating Session interface."""

    def __init__(self, engine, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *, device: int = 0,
                 layers: Mapping[str, Any] | None = None) -> None:
        import tensorrt as trt

        super().__init__(inputs, outputs)
        self.trt = trt
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise UnsupportedModel("TensorRT could not create an execution context (out of device memory?)")
        self.device = open_device(device)
        self.layers = dict(layers or {})
        self._buffers: dict[str, tuple[Any, int, int]] = {}  # name → (buffer, pointer, capacity)
        self._events = [self.device.event() for _ in range(4)]
        self.timings: list[tuple[float, float]] = []  # (with copies, compute only) per call, ms
        self._dtypes = {name: np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                        for name in [s.name for s in self.inputs] + [s.name for s in self.outputs]}

    def _buffer(self, name: str, nbytes: int) -> tuple[Any, int]:
        held = self._buffers.get(name)
        if held is None or held[2] < nbytes:
            if held is not None:
                self.device.free(held[0])
            buffer, pointer = self.device.alloc(nbytes)
            self._buffers[name] = (buffer, pointer, nbytes)
            self.context.set_tensor_address(name, pointer)
            return buffer, pointer
        return held[0], held[1]

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start, compute_start, compute_end, end = self._events
        staged = []
        for spec in self.inputs:
            array = np.ascontiguousarray(feeds[spec.name], dtype=self._dtypes[spec.name])
            if not self.context.set_input_shape(spec.name, array.shape):
                raise InputError(f"input {spec.name!r} shape {array.shape} is outside the engine's optimization "
                                 f"profile {self.engine.get_tensor_profile_shape(spec.name, 0)}; rebuild with "
                                 "wider shapes (option shapes=...)", field=spec.name)
            staged.append((spec.name, array))
        self.device.record(start)
        for name, array in staged:
            buffer, _ = self._buffer(name, array.nbytes)
            self.device.to_device(buffer, array)
        results = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise UnsupportedModel(f"output {spec.name!r} has a data-dependent shape {shape}, which this "
                                       "runner does not support")
            results[spec.name] = np.empty(shape, self._dtypes[spec.name])
            self._buffer(spec.name, results[spec.name].nbytes)
        self.device.record(compute_start)
        if not self.context.execute_async_v3(self.device.handle):
            raise UnsupportedModel("TensorRT execution failed (see the TensorRT log)")
        self.device.record(compute_end)
        for name, host in results.items():
            self.device.to_host(host, self._buffers[name][0])
        self.device.record(end)
        self.device.synchronize()
        self.timings.append((self.device.elapsed_ms(start, end), self.device.elapsed_ms(compute_start, compute_end)))
        return {name: array.astype(np.dtype(spec.dtype), copy=False)
                for spec in self.outputs for name, array in [(spec.name, results[spec.name])]}

    def reset_device_timings(self) -> None:
        """Forget the calls so far (the bench calls it after warming up)."""
        self.timings.clear()

    def device_timings(self) -> dict[str, Any]:
        """CUDA-event latency of the calls so far: p50/p90/p99 with and without host-device copies."""
        if not self.timings:
            return {}
        data = np.asarray(self.timings)
        summary = {}
        for column, label in ((0, "with_copies_ms"), (1, "compute_ms")):
            values = data[:, column]
            summary[label] = {"p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
                              "p99": float(np.percentile(values, 99)), "calls": int(values.size)}
        return summary

    def _close_impl(self) -> None:
        for buffer, _, _ in self._buffers.values():
            self.device.free(buffer)
        self._buffers.clear()
        del self.context
        del self.engine


def gpu_identity(index: int) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device `index`."""
    library = device_library()
    if library == "torch":
        import torch

        major, minor = torch.cuda.get_device_capability(index)
        return torch.cuda.get_device_name(index), f"{major}.{minor}"
    if library == "cuda-python":
        device = _CudaPythonDevice.__new__(_CudaPythonDevice)
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        device.cudart = cudart
        props = device._check(cudart.cudaGetDeviceProperties(index))
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    raise BackendUnavailable("no CUDA device library (torch with CUDA, or cuda-python) to identify the GPU")


def entropy_calibrator(trt, dataset, shapes: Mapping[str, Sequence[int]], device, cache_path):
    """A trt.IInt8EntropyCalibrator2 over an edgeagent Dataset, its cache kept at `cache_path`.

    Implicit calibration runs at one shape per input (the calibration profile); samples of other
    shapes are skipped, and a calibration that used none fails with the shapes it needed.
    """

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.samples = iter(dataset)
            self.buffers: dict[str, tuple[Any, int]] = {}
            self.used = 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks ignore it

        def get_batch(self, names):
            for item in self.samples:
                if any(tuple(np.shape(item[n])) != tuple(shapes[n]) for n in names):
                    continue
                pointers = []
                for name in names:
                    array = np.ascontiguousarray(item[name])
                    if name not in self.buffers:
                        self.buffers[name] = device.alloc(array.nbytes)
                    device.to_device(self.buffers[name][0], array)
                    pointers.append(self.buffers[name][1])
                device.synchronize()
                self.used += 1
                return pointers
            if self.used == 0 and not (cache_path and cache_path.is_file()):
                raise CalibrationError(f"no calibration sample has the calibration shapes {dict(shapes)}")
            return None

        def read_calibration_cache(self):
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()
