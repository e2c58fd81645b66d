"""Load and crash benchmark: 20 labelers vote through the real server while it is killed and restarted.

--labelers simulated labelers (bench/votegen.py: one thread and HTTP client each, POST /api/votes back to back,
a failed vote retried with the SAME idempotency key) vote for --seconds against `launch.py --model tiny` on a
fresh data dir. At --kill-at seconds the server gets SIGKILL (no shutdown code runs), and is started again on
the same port and data dir; the labelers keep retrying through the outage. At the end the server is stopped
and the DuckDB file is read:
  acked       votes acknowledged with a 2xx
  lost        acknowledged votes that are not in the database (target 0)
  duplicated  votes stored more than once (target 0)
  p99_ms      99th percentile latency of the acknowledged requests (the attempt that succeeded; the outage
              itself shows in outage_s, not in p99)
  outage_s    from the kill until the restarted server answered /api/health

Last line: RESULT labelers=... acked=... lost=... duplicated=... p99_ms=... outage_s=...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from votegen import StudioProcess, VoteLoad, audit, percentile  # noqa: E402


def say(line: str) -> None:
    print(line, flush=True)


def run(seconds: float, labelers: int, kill_at: float | None, say=say) -> dict[str, float]:
    """Vote for ``seconds``; SIGKILL + restart the server at ``kill_at`` (None: no crash). The audit figures."""
    with tempfile.TemporaryDirectory(prefix="studio-load-") as tmp:
        data_dir = Path(tmp) / "data"
        server = StudioProcess(data_dir, Path(tmp) / "server.log")
        say(
            f"server up at {server.url} in {server.start():.1f} s; {labelers} labelers voting for {seconds:.0f} s"
            + (f", SIGKILL at {kill_at:.0f} s" if kill_at is not None else "")
        )
        load = VoteLoad(server.url, labelers).start()
        started = time.monotonic()
        outage = 0.0
        before = 0
        killed = kill_at is None
        while (elapsed := time.monotonic() - started) < seconds:
            if not killed and elapsed >= kill_at:
                before = load.count()
                server.kill()
                t0 = time.monotonic()
                say(f"t={elapsed:.0f}s SIGKILL with {before} votes acknowledged; restarting")
                server.start()
                outage = time.monotonic() - t0
                killed = True
                say(f"t={time.monotonic() - started:.0f}s server back after {outage:.1f} s")
                continue
            time.sleep(min(1.0, seconds - elapsed))
            if int(elapsed) % 10 == 0:
                say(f"t={elapsed:.0f}s acknowledged={load.count()} failed attempts={sum(load.failures.values())}")
        load.stop()
        code = server.stop()
        counts = audit(load, data_dir)
        say(f"server stopped (exit code {code}); failed attempts: {dict(load.failures) or 'none'}")
        say(
            f"in the database: {counts['stored']} votes; acknowledged {counts['acked']}, lost {counts['lost']}, "
            f"duplicated {counts['duplicated']}, stored but never acknowledged (in flight at the kill) "
            f"{counts['stored_not_acked']}"
        )
        latencies = load.latencies_ms()
        return {
            **counts,
            "acked_before_kill": before,
            "p99_ms": percentile(latencies, 99) if latencies else float("nan"),
            "outage_s": outage,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labelers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kill-at", type=float, default=None, help="default: half way; negative: no kill")
    args = parser.parse_args()
    kill_at = args.seconds / 2 if args.kill_at is None else (None if args.kill_at < 0 else args.kill_at)
    result = run(args.seconds, args.labelers, kill_at)
    print(
        f"RESULT labelers={args.labelers} acked={result['acked']} lost={result['lost']} "
        f"duplicated={result['duplicated']} p99_ms={result['p99_ms']:.1f} outage_s={result['outage_s']:.1f}"
    )


if __name__ == "__main__":
    main()
