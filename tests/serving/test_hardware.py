"""Hardware detection on this machine, and the training settings chosen for simulated machines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.serving.hardware import GB, KEY_CPU_FLAGS, HardwareProfile, detect_hardware, parse_cpuinfo, training_defaults

SMOLLM2_PARAMS = 134_515_008
AVX2_ONLY = frozenset({"avx2"})
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


def cpu(flags: frozenset[str] = AVX2_ONLY, ram_gb: float = 16) -> HardwareProfile:
    return HardwareProfile(
        cuda_available=False, cpu_model="Test CPU", cpu_cores=2, ram_bytes=int(ram_gb * GB), cpu_flags=flags
    )


def gpu(name: str, memory_gb: float, bf16: bool) -> HardwareProfile:
    return HardwareProfile(
        cuda_available=True,
        cuda_devices=(name,),
        cuda_memory_bytes=(int(memory_gb * GB),),
        cuda_bf16=bf16,
        cpu_model="Host CPU",
        cpu_cores=8,
        ram_bytes=64 * GB,
        cpu_flags=AVX2_ONLY,
    )


def test_detects_this_machine():
    profile = detect_hardware()
    assert detect_hardware() is profile  # detected once
    assert profile.cuda_available == torch.cuda.is_available()
    assert profile.device == "cuda" if torch.cuda.is_available() else profile.device in ("cpu", "mps")
    assert profile.cpu_cores >= 1 and profile.ram_bytes > 0.5 * GB
    assert profile.torch_version == torch.__version__
    assert profile.cpu_flags <= set(KEY_CPU_FLAGS)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux only")
def test_cpu_model_and_flags_come_from_proc_cpuinfo():
    text = Path("/proc/cpuinfo").read_text()
    flags_line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    expected = set(flags_line.partition(":")[2].split()) & set(KEY_CPU_FLAGS)
    profile = detect_hardware()
    assert profile.cpu_flags == expected
    assert profile.cpu_native_bf16 == bool(expected & {"avx512_bf16", "amx_bf16"})
    model_line = next((line for line in text.splitlines() if line.startswith("model name")), None)
    if model_line:
        assert profile.cpu_model == model_line.partition(":")[2].strip()


def test_parse_cpuinfo_reads_the_first_cpu_and_keeps_key_flags():
    text = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n"
        "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    assert parse_cpuinfo(text) == (
        "Intel(R) Xeon(R) Gold 6430",
        frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
    )
    assert parse_cpuinfo("model name : Old CPU\nflags : sse2 avx avx2\n") == ("Old CPU", frozenset({"avx2"}))
    assert parse_cpuinfo("") == ("", frozenset())


def test_small_model_on_cpu_without_native_bf16_trains_in_fp32_without_checkpointing():
    settings = training_defaults(cpu(AVX2_ONLY), SMOLLM2_PARAMS)
    assert settings["bf16"] is False and settings["fp16"] is False
    assert settings["gradient_checkpointing"] is False
    assert settings["use_cpu"] is True
    assert "fp32" in settings["reason"] and "\n" not in settings["reason"]


def test_cpu_with_native_bf16_trains_in_bf16():
    settings = training_defaults(cpu(SAPPHIRE_RAPIDS), SMOLLM2_PARAMS)
    assert settings["bf16"] is True and settings["fp16"] is False
    assert settings["gradient_checkpointing"] is False and settings["use_cpu"] is True
    assert "amx_bf16" in settings["reason"]


def test_big_model_on_small_cpu_memory_uses_gradient_checkpointing():
    settings = training_defaults(cpu(AVX2_ONLY, ram_gb=16), 1_700_000_000)
    assert settings["gradient_checkpointing"] is True and settings["bf16"] is False
    assert "checkpointing on" in settings["reason"]


def test_cuda_with_bf16_trains_in_bf16():
    settings = training_defaults(gpu("NVIDIA A100-SXM4-80GB", 80, bf16=True), SMOLLM2_PARAMS)
    assert settings["bf16"] is True and settings["fp16"] is False
    assert settings["gradient_checkpointing"] is False and settings["use_cpu"] is False
    assert "A100" in settings["reason"]


def test_older_cuda_without_bf16_trains_in_fp16():
    settings = training_defaults(gpu("Tesla T4", 15, bf16=False), SMOLLM2_PARAMS)
    assert settings["fp16"] is True and settings["bf16"] is False
    assert settings["gradient_checkpointing"] is False and settings["use_cpu"] is False


def test_cuda_checkpointing_depends_on_model_size_relative_to_gpu_memory():
    t4 = gpu("Tesla T4", 15, bf16=False)
    assert training_defaults(t4, 7_000_000_000)["gradient_checkpointing"] is True
    assert training_defaults(gpu("NVIDIA H100", 80, bf16=True), 1_000_000_000)["gradient_checkpointing"] is False


def test_training_defaults_for_this_machine_follow_its_cpu():
    profile = detect_hardware()
    settings = training_defaults(profile, SMOLLM2_PARAMS)
    if not profile.cuda_available and not profile.mps_available:
        assert settings["use_cpu"] is True
        assert settings["bf16"] is profile.cpu_native_bf16
        assert settings["gradient_checkpointing"] is False


def test_profile_rows_are_label_value_strings():
    rows = gpu("Tesla T4", 15, bf16=False).as_rows()
    assert all(isinstance(label, str) and isinstance(value, str) for label, value in rows)
    labels = dict(rows)
    assert labels["Device"] == "CUDA" and labels["GPU 0"] == "Tesla T4 (15.0 GB)" and labels["GPU bf16"] == "no"
    this_machine = dict(detect_hardware().as_rows())
    assert {"CPU", "CPU cores", "RAM", "CPU features", "CPU native bf16", "torch"} <= this_machine.keys()
    assert this_machine["torch"] == torch.__version__
    assert this_machine["CPU"]


def test_the_bitsandbytes_kernels_line_is_dropped_and_other_warnings_are_kept(caplog):
    """On AVX512-BF16 CPUs importing bitsandbytes logs that it could not fetch a Hub kernel (every start, nothing to
    act on). The filter drops exactly that line; the installed bitsandbytes still logs it with this wording."""
    import importlib.util
    import logging

    from core.serving.hardware import UNACTIONABLE, quiet_unactionable_warnings

    ((name, (prefix,)),) = UNACTIONABLE.items()
    source = Path(importlib.util.find_spec(name).origin).read_text()
    assert f'"{prefix}' in source
    quiet_unactionable_warnings()
    quiet_unactionable_warnings()  # idempotent: one filter, not two
    log = logging.getLogger(name)
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING):
        log.warning(prefix + ": %s. Please make sure you already `pip install kernels`", "No module named 'kernels'")
        log.warning("Something else went wrong")
    assert [r.getMessage() for r in caplog.records if r.name == name] == ["Something else went wrong"]
