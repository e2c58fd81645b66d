"""The external inference engine as a process: `transformers serve` (an OpenAI-compatible server that ships with
transformers) on loopback, started through the one launcher in bench/harness/processes.py. The tests start it
in float32 (tests/conftest.py's ``engine`` fixture); bench/concurrency.py starts it with continuous batching."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness.processes import free_port, launch, log_tail, stop


@dataclass
class EngineProcess:
    """`transformers serve` (an OpenAI-compatible inference server that ships with transformers) on loopback,
    pinned to one local model: the external engine the studio's --inference-url talks to in tests.

    ``args`` are its serving options: float32 in the tests (greedy answers compared with the in-process model),
    continuous batching in bench/concurrency.py."""

    model_dir: Path
    work_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    args: tuple[str, ...] = ("--dtype", "float32")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return str(self.model_dir)

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"engine-{self.port}.log"

    def start(self, timeout: float = 120.0) -> EngineProcess:
        self.port = self.port or free_port()
        cache = self.work_dir / "hf-cache"  # it lists cached Hub models; an empty cache lists none
        cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        command = [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        self.process = launch(
            command,
            f"http://127.0.0.1:{self.port}/health",
            self.log_path,
            name="transformers serve",
            timeout=timeout,
            cwd=self.work_dir,
            env=env,
        )
        return self

    def stop(self) -> None:
        """SIGKILL: the engine holds no data worth a clean shutdown."""
        stop(self.process, grace=0)

    def log(self) -> str:
        return log_tail(self.log_path)
