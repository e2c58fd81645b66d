"""Startup benchmark: seconds from `python launch.py` to the first 200 from /api/health.

cold: a fresh data dir, so the default model is converted from its GGUF first.
warm: the same data dir again (model cache present).
Last line: RESULT cold_s=... warm_s=...
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from votegen import StudioProcess  # noqa: E402


def start_and_time(data_dir: Path) -> float:
    server = StudioProcess(data_dir, data_dir.parent / "server.log", model="default")
    try:
        return server.start()
    finally:
        server.stop()


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
