"""Choosing the compute device, mixed precision and falling back when the GPU runs out of memory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

from plkd.devices import DEVICE_CHOICES
from plkd.errors import PLKDError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must be available."""
    if isinstance(name, torch.device):
        return name
    choice = str(name).lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PLKDError("--device cuda was requested but PyTorch sees no CUDA GPU (use --device auto or cpu)")
        return torch.device(choice)
    if choice == "mps":
        if not _mps_available():
            raise PLKDError("--device mps was requested but Apple MPS is not available (use --device auto or cpu)")
        return torch.device("mps")
    if choice == "cpu":
        return torch.device("cpu")
    raise PLKDError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def usable_device(name: str | torch.device = "auto") -> tuple[torch.device, str | None]:
    """The device to run on and, when an explicit GPU (``cuda``, ``mps``) is not available, the CPU instead with the
    warning that says so (a script written for a GPU machine run on a laptop). Unknown names are refused as by
    :func:`resolve_device`, which stays strict for timing and training."""
    try:
        return resolve_device(name), None
    except PLKDError:
        choice = str(name).lower()
        kind = choice.split(":")[0]
        if kind not in ("cuda", "mps"):
            raise
    what = "PyTorch sees no CUDA GPU" if kind == "cuda" else "Apple MPS is not available"
    return torch.device("cpu"), f"--device {choice} was requested but {what}: running on the CPU (slower)"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA (about twice as fast, half the memory); full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the errors PyTorch raises when a device runs out of memory."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class DeviceState:
    """The device and batch size in use; shrinks on out-of-memory and finally moves to the CPU.

    One instance is shared by the stages of a prediction so that a fallback decided while
    screening also applies to segmentation.
    """

    def __init__(self, device: torch.device, batch_size: int) -> None:
        if batch_size < 1:
            raise PLKDError(f"batch size must be at least 1, not {batch_size}")
        self.device = device
        self.batch_size = int(batch_size)
        self.warnings: list[str] = []

    def run(self, work: Callable[[torch.device, int], T]) -> T:
        """Call ``work(device, batch_size)``, halving the batch and then using the CPU on OOM."""
        while True:
            try:
                return work(self.device, self.batch_size)
            except Exception as exc:
                if not is_out_of_memory(exc) or self.device.type == "cpu":
                    raise
                self._release()
                if self.batch_size > 1:
                    self.batch_size //= 2
                    msg = f"{self.device.type} ran out of memory; retrying with batch size {self.batch_size}"
                else:
                    msg = f"{self.device.type} ran out of memory even with batch size 1; continuing on the CPU (slower)"
                    self.device = torch.device("cpu")
                log.warning(msg)
                self.warnings.append(msg)

    def _release(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@contextlib.contextmanager
def inference_mode() -> Iterator[None]:
    """No autograd bookkeeping: inference only."""
    with torch.inference_mode():
        yield
