"""How a training job is launched: one process, DDP over several processes, FSDP, DeepSpeed ZeRO, several nodes.

The studio does not distribute training itself: a job is always ``accelerate launch -m core.training.child CONFIG``,
and the launch mode chosen on the Train page (or ``launch.py train --launch mode=ddp --launch num_processes=2``)
is written as an accelerate config file into the job's run dir (``accelerate.yaml``). The same file runs the job
by hand on a GPU box (``accelerate launch --config_file runs/<id>/accelerate.yaml -m core.training.child
runs/<id>/config.json``).

- ``ddp``: one process per GPU; on a machine without GPUs, CPU processes that average gradients over gloo (each
  with its share of the cores). Tested here with 2 CPU processes.
- ``fsdp`` / ``deepspeed_zero2`` / ``deepspeed_zero3``: shard the model (and optimizer state) over GPUs; they need
  CUDA (DeepSpeed also the ``deepspeed`` package), and are refused clearly elsewhere.
- ``num_machines`` > 1: this machine is ``machine_rank``; every other machine runs the same command with its
  own rank and the same ``main_process_ip``/``port`` (the Runs page shows it).

The effective batch stays what the studio chose for the data: with N processes each accumulates 1/N as many
micro-batches (core.training.defaults), so a DDP job follows the same loss curve as a one-process job.

Also here, because both the supervisor (which starts the child) and the child (which adjusts its threads between
steps, core.training.callbacks) need them without importing each other: ``trainer_threads`` (how many CPU
threads a trainer uses) and ``child_command`` (the command line that starts the child).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from core.errors import ValidationError
from core.training.rundir import accelerate_path

LAUNCH_MODES = ("single", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
SHARDED = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LaunchConfig:
    """The Train page's "Launch" form is generated from these fields."""

    mode: str = field(
        default="single",
        metadata={
            "choices": LAUNCH_MODES,
            "help": "single: one process. ddp: data parallel, one process per GPU (CPU "
            "processes over gloo without GPUs). fsdp / deepspeed_zero2 / deepspeed_zero3: shard the model over GPUs.",
        },
    )
    num_processes: int = field(
        default=1,
        metadata={
            "min": 1,
            "max": 64,
            "help": "Processes on this machine (one per GPU). Without GPUs, CPU processes share the cores.",
        },
    )
    num_machines: int = field(
        default=1,
        metadata={
            "min": 1,
            "max": 64,
            "help": "Machines taking part; each runs the same job with its own machine rank.",
        },
    )
    machine_rank: int = field(default=0, metadata={"min": 0, "max": 63, "help": "This machine's rank (0 = main)."})
    main_process_ip: str = field(
        default="", metadata={"help": "Address of machine 0, reachable from every machine (several machines only)."}
    )
    main_process_port: int = field(
        default=29500,
        metadata={
            "min": 1024,
            "max": 65535,
            "help": "Port on machine 0 the processes meet on (several machines only).",
        },
    )

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LaunchConfig:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValidationError(
                f"Unknown launch setting(s): {', '.join(unknown)}", hint=f"use {', '.join(sorted(known))}"
            )
        try:
            return cls(**values).validate()
        except TypeError as exc:
            raise ValidationError(f"Invalid launch settings: {exc}", hint="see launch.py train --help") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def world_size(self) -> int:
        return 1 if self.mode == "single" else self.num_processes * self.num_machines

    def validate(self, cuda: bool | None = None) -> LaunchConfig:
        """Check the values; with ``cuda`` given, also that this machine can run the mode."""
        if self.mode not in LAUNCH_MODES:
            raise ValidationError(f"Unknown launch mode {self.mode!r}", hint=f"choose one of {', '.join(LAUNCH_MODES)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "min" in f.metadata and not f.metadata["min"] <= value <= f.metadata["max"]:
                raise ValidationError(
                    f"{f.name}={value} is out of range",
                    hint=f"choose between {f.metadata['min']} and {f.metadata['max']}",
                )
        if self.mode == "single" and (self.num_processes > 1 or self.num_machines > 1):
            raise ValidationError(
                "The single-process mode runs one process on one machine",
                hint="choose ddp (or fsdp / deepspeed) for several processes or machines",
            )
        if self.machine_rank >= self.num_machines:
            raise ValidationError(
                f"machine_rank {self.machine_rank} needs at least {self.machine_rank + 1} machines",
                hint="ranks go from 0 to num_machines - 1",
            )
        if self.num_machines > 1:
            try:
                ipaddress.ip_address(self.main_process_ip)
            except ValueError:
                raise ValidationError(
                    "Several machines need the IP address of machine 0", hint="set main_process_ip, e.g. 10.0.0.2"
                ) from None
        if cuda is not None and self.mode in SHARDED:
            if not cuda:
                raise ValidationError(
                    f"{self.mode} shards the model over GPUs, and this machine has none",
                    hint=f"use ddp (CPU processes over gloo) or single here; {self.mode} on a machine with CUDA GPUs",
                )
            if self.mode.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
                raise ValidationError(
                    f"{self.mode} needs the deepspeed package", hint="pip install deepspeed (on the GPU machine)"
                )
        return self

    def accelerate_config(self, cuda: bool) -> dict[str, Any]:
        """The accelerate config file's content for this mode (``accelerate launch --config_file``)."""
        config: dict[str, Any] = {
            "compute_environment": "LOCAL_MACHINE",
            "debug": False,
            "downcast_bf16": "no",
            "dynamo_config": {"dynamo_backend": "NO"},
            "mixed_precision": "no",
            "num_machines": self.num_machines if self.mode != "single" else 1,
            "num_processes": self.world_size,
            "machine_rank": self.machine_rank if self.mode != "single" else 0,
            "rdzv_backend": "static",
            "same_network": True,
            "main_training_function": "main",
            "use_cpu": not cuda and self.mode == "single",
            "tpu_use_cluster": False,
            "tpu_use_sudo": False,
        }
        if self.mode == "single":
            config["distributed_type"] = "NO"
        elif self.mode == "ddp":
            # MULTI_GPU is accelerate's multi-process launcher (torchrun); without CUDA every process runs on
            # the CPU and accelerate picks the gloo backend (MULTI_CPU in its own terms needs mpirun)
            config["distributed_type"] = "MULTI_GPU"
        elif self.mode == "fsdp":
            config["distributed_type"] = "FSDP"
            config["fsdp_config"] = {
                "fsdp_version": 2,
                "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "fsdp_reshard_after_forward": True,
                "fsdp_state_dict_type": "FULL_STATE_DICT",
                "fsdp_cpu_ram_efficient_loading": True,
                "fsdp_offload_params": False,
            }
        else:
            config["distributed_type"] = "DEEPSPEED"
            config["deepspeed_config"] = {
                "zero_stage": 2 if self.mode == "deepspeed_zero2" else 3,
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
                "offload_optimizer_device": "none",
                "offload_param_device": "none",
                "zero3_init_flag": self.mode == "deepspeed_zero3",
                "zero3_save_16bit_model": self.mode == "deepspeed_zero3",
            }
        if self.num_machines > 1 and self.mode != "single":
            config["main_process_ip"] = self.main_process_ip
            config["main_process_port"] = self.main_process_port
        elif self.world_size > 1:
            config["main_process_port"] = _free_port()  # two local jobs never meet on the same port
        return config

    def write(self, run_dir: Path, cuda: bool) -> Path:
        """Write ``accelerate.yaml`` into the run dir; its path."""
        import yaml

        path = accelerate_path(run_dir)
        path.write_text(yaml.safe_dump(self.accelerate_config(cuda), sort_keys=False))
        return path

    def threads_per_process(self, threads: int) -> int:
        """CPU threads for each local process: the cores are shared by this machine's processes."""
        local = 1 if self.mode == "single" else self.num_processes
        return max(1, threads // local)


def trainer_threads(chat_active: bool = False) -> int:
    """CPU threads a trainer uses: every core, or all cores but one while people are chatting.

    Two OpenMP pools competing for the same cores spin against each other: on 2 cores a 32-token answer
    took 30-38 s instead of 1.2 s while a job ran with all threads (measured). But holding a core back all
    the time made a DPO step 1.7x slower on 2 cores (measured), so the trainer only lends the core while
    the chat is in use (see :func:`core.training.rundir.mark_chat_active`). STUDIO_TRAIN_THREADS fixes the
    count instead.
    """
    configured = os.environ.get("STUDIO_TRAIN_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    total = psutil.cpu_count(logical=True) or 1
    return max(1, total - 1) if chat_active else total


def child_command(config_path: Path, accelerate_file: Path | None = None) -> list[str | Path]:
    """``accelerate launch -m core.training.child CONFIG``: the job's accelerate config (its launch mode), or one
    from env STUDIO_ACCELERATE_CONFIG for jobs launched as a single process."""
    cmd: list[str | Path] = [sys.executable, "-m", "accelerate.commands.launch"]
    env_file = os.environ.get("STUDIO_ACCELERATE_CONFIG")
    config_file = (
        env_file if env_file and (accelerate_file is None or _single_process(accelerate_file)) else accelerate_file
    )
    if config_file:
        cmd += ["--config_file", config_file]
    else:
        cmd += ["--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no"]
        if not cuda_available():
            cmd += ["--cpu"]
    return cmd + ["-m", "core.training.child", str(config_path)]


def cuda_available() -> bool:
    """Whether this machine has a CUDA GPU (imports torch: call it when a job is submitted or started, not at
    import)."""
    import torch

    return torch.cuda.is_available()


def _single_process(accelerate_file: Path) -> bool:
    import yaml

    return (yaml.safe_load(accelerate_file.read_text()) or {}).get("num_processes", 1) == 1
