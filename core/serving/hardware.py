"""What this machine can do, and the training precision / memory settings that follow from it.

TRL's configs default to ``bf16=True`` and ``gradient_checkpointing=True``. That is right for a modern GPU
and badly wrong for a CPU that has to emulate bf16: on a CPU with AVX2 only, one DPO step of 4 pairs on
SmolLM2-135M took ~100 s with TRL's defaults and 8.2 s with fp32 and no checkpointing. On a CPU with
native bf16 (AMX / AVX512-BF16) bf16 autocast is a gain instead (measured 5.4 s vs 6.8 s per DPO step).
So we detect the hardware once and pick the settings from it, with a one-line reason for the UI.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

# CPU flags worth showing; the bf16 ones decide whether bf16 runs natively or is emulated (slowly).
KEY_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

# Full fine-tuning with AdamW in fp32 holds ~16 bytes per parameter (weights 4, grads 4, Adam moments 8);
# preference training adds a frozen reference copy (4). Above this share of memory we trade ~20-30% speed
# for activation memory by enabling gradient checkpointing.
TRAINING_BYTES_PER_PARAM = 20
CHECKPOINTING_MEMORY_SHARE = 0.5
SMALL_MODEL_PARAMS = 1_000_000_000

GB = 1024**3


@dataclass(frozen=True)
class HardwareProfile:
    """A snapshot of the accelerators, CPU and memory that training and generation can use."""

    cuda_available: bool
    cuda_devices: tuple[str, ...] = ()
    cuda_memory_bytes: tuple[int, ...] = ()  # total memory per CUDA device, same order as cuda_devices
    cuda_bf16: bool = False  # torch.cuda.is_bf16_supported() (Ampere and newer)
    mps_available: bool = False
    cpu_model: str = "unknown CPU"
    cpu_cores: int = 1  # logical CPUs this process may use
    ram_bytes: int = 0
    cpu_flags: frozenset[str] = field(default_factory=frozenset)  # the KEY_CPU_FLAGS present
    torch_version: str = torch.__version__

    @property
    def cpu_native_bf16(self) -> bool:
        """True when the CPU computes bf16 in hardware; without it torch emulates bf16 and is much slower."""
        return any(flag in self.cpu_flags for flag in NATIVE_BF16_FLAGS)

    @property
    def device(self) -> str:
        """The device training and generation run on by default: ``cuda``, ``mps`` or ``cpu``."""
        if self.cuda_available:
            return "cuda"
        return "mps" if self.mps_available else "cpu"

    @property
    def bf16_supported(self) -> bool:
        """bf16 is fast on the default device (CUDA: Ampere+; CPU: AMX or AVX512-BF16)."""
        if self.cuda_available:
            return self.cuda_bf16
        if self.mps_available:
            return False
        return self.cpu_native_bf16

    @property
    def accelerator_memory_bytes(self) -> int:
        """Memory that bounds training: the smallest CUDA device, else system RAM (MPS shares RAM)."""
        if self.cuda_available and self.cuda_memory_bytes:
            return min(self.cuda_memory_bytes)
        return self.ram_bytes

    def as_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a settings table in the UI."""
        rows: list[tuple[str, str]] = [("Device", self.device.upper() if self.device != "mps" else "Apple MPS")]
        for index, name in enumerate(self.cuda_devices):
            memory = self.cuda_memory_bytes[index] if index < len(self.cuda_memory_bytes) else 0
            rows.append((f"GPU {index}", f"{name} ({memory / GB:.1f} GB)"))
        if self.cuda_available:
            rows.append(("GPU bf16", "yes" if self.cuda_bf16 else "no"))
        rows += [
            ("CPU", self.cpu_model),
            ("CPU cores", str(self.cpu_cores)),
            ("RAM", f"{self.ram_bytes / GB:.1f} GB"),
            ("CPU features", ", ".join(f for f in KEY_CPU_FLAGS if f in self.cpu_flags) or "none detected"),
            ("CPU native bf16", "yes" if self.cpu_native_bf16 else "no (emulated, slow)"),
            ("torch", self.torch_version),
        ]
        return rows


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """CPU model name and the KEY_CPU_FLAGS present, from the text of /proc/cpuinfo (first CPU listed)."""
    model = ""
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 says "flags", ARM says "Features"
            flags = frozenset(value.split()) & frozenset(KEY_CPU_FLAGS)
    return model, flags


def _cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    """Read /proc/cpuinfo on Linux; elsewhere fall back to platform names and no flags (assume no bf16)."""
    model = ""
    flags: frozenset[str] = frozenset()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
        except OSError:
            pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def _usable_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / container CPU sets
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _detect() -> HardwareProfile:
    """Probe the machine (uncached; use ``detect_hardware``)."""
    cuda = torch.cuda.is_available()
    names: tuple[str, ...] = ()
    memory: tuple[int, ...] = ()
    cuda_bf16 = False
    if cuda:
        count = torch.cuda.device_count()
        names = tuple(torch.cuda.get_device_name(i) for i in range(count))
        memory = tuple(torch.cuda.get_device_properties(i).total_memory for i in range(count))
        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend and mps_backend.is_available())
    cpu_model, flags = _cpu_model_and_flags()
    return HardwareProfile(
        cuda_available=cuda,
        cuda_devices=names,
        cuda_memory_bytes=memory,
        cuda_bf16=cuda_bf16,
        mps_available=mps,
        cpu_model=cpu_model,
        cpu_cores=_usable_cpu_count(),
        ram_bytes=psutil.virtual_memory().total,
        cpu_flags=flags,
        torch_version=torch.__version__,
    )


@functools.cache
def detect_hardware() -> HardwareProfile:
    """The hardware profile of this process, detected once (hardware does not change while we run)."""
    return _detect()


def training_defaults(profile: HardwareProfile, n_params: int) -> dict[str, bool | str]:
    """Precision and memory settings for training a model of ``n_params`` parameters on ``profile``.

    Returns ``{"bf16", "fp16", "gradient_checkpointing", "use_cpu", "reason"}``: the first four map onto
    TRL / transformers ``TrainingArguments`` fields, ``reason`` is one line for the UI.
    """
    memory = profile.accelerator_memory_bytes
    needed = n_params * TRAINING_BYTES_PER_PARAM
    checkpointing = memory > 0 and needed > CHECKPOINTING_MEMORY_SHARE * memory
    size = (
        f"{n_params / 1e6:,.0f}M-param model" if n_params < SMALL_MODEL_PARAMS else f"{n_params / 1e9:.1f}B-param model"
    )
    memory_note = (
        f"gradient checkpointing on (needs ~{needed / GB:.0f} GB of {memory / GB:.0f} GB)"
        if checkpointing
        else "no gradient checkpointing (fits in memory, faster)"
    )

    if profile.cuda_available:
        bf16 = profile.cuda_bf16
        precision = "bf16 (GPU supports it)" if bf16 else "fp16 (GPU has no bf16)"
        return {
            "bf16": bf16,
            "fp16": not bf16,
            "gradient_checkpointing": checkpointing,
            "use_cpu": False,
            "reason": f"{size} on {profile.cuda_devices[0] if profile.cuda_devices else 'CUDA'}: {precision}, "
            f"{memory_note}.",
        }

    if profile.mps_available:
        return {
            "bf16": False,
            "fp16": False,
            "gradient_checkpointing": checkpointing,
            "use_cpu": False,
            "reason": f"{size} on Apple MPS: fp32 (mixed precision is unreliable on MPS), {memory_note}.",
        }

    bf16 = profile.cpu_native_bf16
    if bf16:
        native = ", ".join(f for f in NATIVE_BF16_FLAGS if f in profile.cpu_flags)
        precision = f"bf16 (CPU has native bf16: {native})"
    else:
        precision = "fp32 (CPU has no native bf16; TRL's bf16 default measured ~12x slower)"
    return {
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": checkpointing,
        "use_cpu": True,
        "reason": f"{size} on CPU ({profile.cpu_cores} cores): {precision}, {memory_note}.",
    }


# --- warnings nobody can act on ------------------------------------------------------------------------------

# On CPUs with AVX512-BF16, importing bitsandbytes tries to fetch a 4-bit kernel from the Hub through the optional
# `kernels` package and logs a warning on every start when it cannot (offline, or not installed). Its pure
# PyTorch fallback is what runs; the studio never uses 4-bit on CPU, so the line only alarms people.
UNACTIONABLE = {"bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",)}


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_FILTERS = {name: _DropMessages(prefixes) for name, prefixes in UNACTIONABLE.items()}


def quiet_unactionable_warnings() -> None:
    """Drop library log lines a user cannot act on (idempotent; call before the libraries are imported)."""
    for name, drop in _FILTERS.items():
        logging.getLogger(name).addFilter(drop)
