"""Device selection: CUDA with AMP and channels_last when present, else CPU (channels_last too) with a thread cap."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full precision
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def needs_scaler(self) -> bool:  # fp16 needs loss scaling, bf16 does not
        return self.amp_dtype == torch.float16


def select_device(prefer: str = "auto", threads: int | None = None, amp: bool = True) -> DeviceSetup:
    """``prefer``: auto | cpu | cuda. On CPU, torch uses ``threads`` (the rule's threads)."""
    if prefer not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got '{prefer}'")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but no CUDA device is visible; use device: auto")
    if prefer != "cpu" and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceSetup(torch.device("cuda"), dtype if amp else None, channels_last=True)
    if threads:
        torch.set_num_threads(int(threads))
    # channels_last on CPU too: oneDNN's NHWC convolutions train and infer these small CNNs faster
    # on one thread than NCHW (benchmarks/trainer_throughput.py runs our memory format)
    return DeviceSetup(torch.device("cpu"), None, channels_last=True)
