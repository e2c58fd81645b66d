"""Startup benchmark: seconds from `python launch.py` to the first 200 from /api/health.

cold: a fresh data dir, so the default model is converted from its GGUF first.
warm: the same data dir again (model cache present).
Last line: RESULT cold_s=... warm_s=...
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_and_time(data_dir: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--data-dir", str(data_dir),
                             "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with code {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > 600:
                raise SystemExit("server did not answer within 600 s")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        cold = start_and_time(data_dir)
        print(f"cold start (converts the default model): {cold:.1f} s", flush=True)
        warm = start_and_time(data_dir)
        print(f"warm start: {warm:.1f} s", flush=True)
    print(f"RESULT cold_s={cold:.1f} warm_s={warm:.1f}")


if __name__ == "__main__":
    main()
