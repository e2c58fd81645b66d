"""Standard benchmarks benchmark: what `launch.py bench` costs on the default model, and that the parent is cached.

On a fresh data dir with the default model: two versions (real LoRA adapters, r=16 on q/v, random weights) are
registered on the base; v1 is benchmarked against the base (both run), then v2 (the base's run is reused).
Figures: tasks and items of the suite, seconds of the version's run and of the parent's, parent_cached (1 when the
second version reused the base's run), the adapter guard's verdict, and each task's score.
Last line: RESULT tasks=... items=... version_s=... parent_s=... parent_cached=... adapter_applied=...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


from bench.harness.versions import random_versions  # noqa: E402


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--tasks", default="studio-offline")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    from app.cli import prepare_model
    from core.compare.benchmarks import BenchSettings, benchmark_version
    from core.config import load_settings
    from storage.db import Database

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        settings = load_settings({"data_dir": str(Path(tmp) / "data"), "model": args.model}, env={})
        model_path = prepare_model(settings)
        db = Database(settings.db_path)
        try:
            random_versions(db, settings.runs_dir, args.model, model_path, 2)
            bench = BenchSettings(tasks=tuple(args.tasks.split(",")), limit=args.limit)
            started = time.monotonic()
            first = benchmark_version(db, model_path, "v1", bench, progress=lambda f, t: None)
            both_s = time.monotonic() - started
            version_s = first["seconds"]
            parent_s = both_s - version_s
            for row in first["tasks"]:
                say(
                    f"  {row['task']:22} {row['metric']:8} v1 {row['value']:.3f} ± {row['stderr'] or 0:.3f}   "
                    f"base {row['against_value']:.3f}   {row['change_points']:+.1f} pts"
                    + ("  REGRESSED" if row["regressed"] else "")
                )
            say(f"v1 and base benchmarked in {both_s:.0f} s (v1 {version_s:.0f} s); adapter guard: {first['adapter']}")
            started = time.monotonic()
            second = benchmark_version(db, model_path, "v2", bench, progress=lambda f, t: None)
            say(f"v2 in {time.monotonic() - started:.0f} s, the base's run reused: {second['parent_cached']}")
            items = sum(row.get("n") or 0 for row in first["tasks"])
        finally:
            db.close()
    say(
        f"RESULT tasks={len(first['tasks'])} items={items} version_s={version_s:.0f} parent_s={parent_s:.0f} "
        f"parent_cached={int(second['parent_cached'])} adapter_applied={int(bool(first['adapter_applied']))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
