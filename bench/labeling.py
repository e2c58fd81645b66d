"""Labeling benchmark: what a labeler waits for, and whether every acknowledged vote is kept.

gen (the default model, SmolLM2-135M-Instruct, on this machine's CPU):
  pair_ratio  wall time of a two-candidate turn (stream_pair: ONE batched generate of 2 rows) divided by a
              one-candidate turn (stream_chat), same prompt, same number of new tokens (forced with
              min_new_tokens = max_new_tokens). Target <= 1.40.
  gen_ratio   tokens/s of stream_chat consumed snapshot by snapshot (as the chat UI does) divided by tokens/s
              of a bare model.generate (no streamer, no thread) in the same run. Target >= 0.90.
  After a warm-up, --reps repetitions run the variants back to back (raw, chat, pair); each figure is
  the median over the repetitions of the ratio within one repetition, so that load from other
  processes (which changes slowly) hits both sides of a ratio alike.
votes (a real server, `launch.py --model tiny`, in a subprocess):
  --labelers threads, each with its own HTTP client, POST /api/votes for --seconds; latency of each
  acknowledged (2xx) request -> p50 / p99. Then the server is stopped (SIGTERM) and the DuckDB file is
  read: lost = acknowledged idempotency keys that are not in preferences.

Last line: RESULT pair_ratio=... gen_ratio=... vote_p50_ms=... vote_p99_ms=... lost=...
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROMPT = [{"role": "user", "content": "Explain to a new colleague why code review matters, with two examples."}]
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "rlhf-studio-bench"


def say(line: str) -> None:
    print(line, flush=True)


# --- generation -------------------------------------------------------------------------------------------


def in_fresh_thread(fn):
    """Run ``fn`` in a thread that exits afterwards, as the server does (model warm-up thread, one thread per
    generation). Torch ops in a thread that stays alive (e.g. this main thread) leave an idle OpenMP pool
    behind, and with two pools on a 2-core machine libgomp throttles its spin-waits: every other thread's
    ops get ~1.6x slower. The bench must not create that handicap for the app path (see the last gen line)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def bench_generation(data_dir: Path, new_tokens: int, reps: int) -> tuple[float, float]:
    import torch

    from core.serving import generate as gen
    from core.serving.generate import SamplingParams, prepare_chat, stream_chat, stream_pair
    from core.serving.models import load_model, provision_default_model

    started = time.perf_counter()
    model, tokenizer = in_fresh_thread(lambda: load_model(provision_default_model(data_dir, progress=False)))
    say(
        f"gen: default model ready in {time.perf_counter() - started:.1f} s "
        f"({str(model.dtype).removeprefix('torch.')}, torch threads={torch.get_num_threads()}, "
        f"{new_tokens} new tokens per answer, {reps} reps)"
    )
    sampling = SamplingParams(max_new_tokens=new_tokens)  # the labeling defaults: temperature 0.7, top_p 0.9
    force = {"min_new_tokens": new_tokens}
    input_ids = prepare_chat(tokenizer, model, PROMPT, new_tokens).input_ids

    def raw_here(rows: int) -> float:
        ids = input_ids.expand(rows, -1).contiguous()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pad_token_id=tokenizer.pad_token_id,
                **sampling.generate_kwargs(),
                **force,
            )
        elapsed = time.perf_counter() - t0
        assert out.shape[1] - ids.shape[1] == new_tokens
        return elapsed

    def raw(rows: int) -> float:
        return in_fresh_thread(lambda: raw_here(rows))

    def chat() -> float:
        t0 = time.perf_counter()
        snapshots = 0
        for _ in stream_chat(model, tokenizer, PROMPT, sampling, **force):
            snapshots += 1
        elapsed = time.perf_counter() - t0
        assert snapshots > new_tokens // 4, f"stream_chat yielded only {snapshots} snapshots"
        return elapsed

    def pair() -> float:
        t0 = time.perf_counter()
        final = None
        for final in stream_pair(model, tokenizer, PROMPT, sampling, **force):
            pass
        elapsed = time.perf_counter() - t0
        assert final is not None and (final.new_tokens_a, final.new_tokens_b) == (new_tokens, new_tokens)
        return elapsed

    # where the streaming overhead goes: time spent inside the streamer (decoding + queueing), per step
    put_seconds = [0.0, 0]
    original_put = gen.PairStreamer.put

    def timed_put(self, value):
        t0 = time.perf_counter()
        try:
            return original_put(self, value)
        finally:
            put_seconds[0] += time.perf_counter() - t0
            put_seconds[1] += 1

    t0 = time.perf_counter()
    raw(1), chat(), pair(), raw(2)
    say(f"gen: warm-up done in {time.perf_counter() - t0:.1f} s")
    times: dict[str, list[float]] = collections.defaultdict(list)
    gen.PairStreamer.put = timed_put
    try:
        for rep in range(1, reps + 1):
            for name, run in (("raw1", lambda: raw(1)), ("chat", chat), ("pair", pair), ("raw2", lambda: raw(2))):
                times[name].append(run())
            say(
                f"gen: rep {rep}/{reps}: "
                + " ".join(f"{name}={values[-1]:.2f}s" for name, values in times.items())
                + f" (load avg {os.getloadavg()[0]:.2f})"
            )
    finally:
        gen.PairStreamer.put = original_put
    med = {name: statistics.median(values) for name, values in times.items()}
    spread = max(max(values) / min(values) for values in times.values())
    if spread > 1.3:
        say(
            f"gen: WARNING noisy run: one variant's slowest rep took {spread:.1f}x its fastest; other processes "
            "competed for the CPU (two OpenMP processes on 2 cores slow each other down a lot): rerun when idle"
        )
    say(
        "gen: medians "
        + " ".join(f"{name}={value:.3f}s ({new_tokens / value:.1f} tok/s per row)" for name, value in med.items())
    )
    say(
        f"gen: streamer overhead {put_seconds[0] / max(put_seconds[1], 1) * 1e6:.0f} us per step "
        f"(over {put_seconds[1]} steps; a step of the model takes ~{med['raw1'] / new_tokens * 1e3:.0f} ms)"
    )
    say(
        f"gen: raw batch-of-2 / batch-of-1 = {med['raw2'] / med['raw1']:.3f}; "
        f"stream_pair / raw batch-of-2 = {med['pair'] / med['raw2']:.3f}"
    )
    # ratios of runs taken back to back (chat right after raw1, pair right after chat): load from other
    # processes changes slowly compared with one run, so per-rep ratios are steadier than ratios of medians
    pair_ratios = [p / c for p, c in zip(times["pair"], times["chat"])]
    gen_ratios = [r / c for r, c in zip(times["raw1"], times["chat"])]
    say(
        "gen: per-rep pair ratios "
        + " ".join(f"{r:.3f}" for r in pair_ratios)
        + "; gen ratios "
        + " ".join(f"{r:.3f}" for r in gen_ratios)
    )
    best = {name: min(values) for name, values in times.items()}
    say(
        f"gen: ratios of medians: pair={med['pair'] / med['chat']:.3f} gen={med['raw1'] / med['chat']:.3f}; "
        f"of best runs (least disturbed): pair={best['pair'] / best['chat']:.3f} gen={best['raw1'] / best['chat']:.3f}"
    )

    # the pitfall, shown last because it cannot be undone: once a long-lived thread (here: main) has run
    # torch ops, generation in any other thread slows down
    main_raw = raw_here(1)
    chat_after, raw_after = chat(), raw(1)
    say(
        f"gen: pitfall: after torch ran in the (long-lived) main thread: raw generate in main={main_raw:.2f}s, "
        f"then stream_chat={chat_after:.2f}s and raw generate in another thread={raw_after:.2f}s "
        f"(vs {med['chat']:.2f}s / {med['raw1']:.2f}s before): keep torch work out of threads that stay alive"
    )
    return statistics.median(pair_ratios), statistics.median(gen_ratios)


# --- votes ------------------------------------------------------------------------------------------------


def bench_votes(seconds: float, labelers: int) -> tuple[float, float, int]:
    from votegen import StudioProcess, VoteLoad, audit, percentile

    with tempfile.TemporaryDirectory(prefix="studio-bench-votes-") as tmp:
        data_dir = Path(tmp) / "data"
        server = StudioProcess(data_dir, Path(tmp) / "server.log")
        took = server.start()
        say(f"votes: server up at {server.url} in {took:.1f} s; {labelers} labelers voting for {seconds:.0f} s")
        load = VoteLoad(server.url, labelers).start()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(min(5.0, seconds - (time.monotonic() - started)))
            say(
                f"votes: t={time.monotonic() - started:.0f}s acknowledged={load.count()} "
                f"failed={sum(load.failures.values())}"
            )
        load.stop()
        code = server.stop()
        counts = audit(load, data_dir)
        say(
            f"votes: server stopped (exit code {code}); {counts['acked']} acknowledged "
            f"({counts['acked'] / seconds:.0f}/s), failures: {dict(load.failures) or 'none'} {load.first_errors or ''}"
        )
        say(
            f"votes: in the database: {counts['stored']} keys; lost={counts['lost']} "
            f"duplicated={counts['duplicated']} stored-but-not-acknowledged={counts['stored_not_acked']}"
        )
        latencies = load.latencies_ms()
        if not latencies:
            say(f"votes: nothing acknowledged; server log tail:\n{server.log_tail()}")
            return float("nan"), float("nan"), counts["lost"]
        return percentile(latencies, 50), percentile(latencies, 99), counts["lost"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the default model is converted once and reused (default {DEFAULT_CACHE})",
    )
    parser.add_argument("--new-tokens", type=int, default=64, help="answer length, forced (default 64)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (default 5)")
    parser.add_argument("--seconds", type=float, default=30, help="how long the labelers vote (default 30)")
    parser.add_argument("--labelers", type=int, default=20, help="concurrent simulated labelers (default 20)")
    parser.add_argument("--skip-gen", action="store_true", help="skip the generation part")
    parser.add_argument("--skip-votes", action="store_true", help="skip the vote part")
    args = parser.parse_args()

    pair_ratio = gen_ratio = p50 = p99 = float("nan")
    lost: int | str = "na"
    if not args.skip_gen:
        pair_ratio, gen_ratio = bench_generation(args.data_dir, args.new_tokens, args.reps)
        say(f"gen: pair_ratio={pair_ratio:.3f} (target <= 1.40) gen_ratio={gen_ratio:.3f} (target >= 0.90)")
    if not args.skip_votes:
        p50, p99, lost = bench_votes(args.seconds, args.labelers)
    fmt = lambda value, digits: "na" if value != value else f"{value:.{digits}f}"  # noqa: E731 (nan -> na)
    say(
        f"RESULT pair_ratio={fmt(pair_ratio, 3)} gen_ratio={fmt(gen_ratio, 3)} "
        f"vote_p50_ms={fmt(p50, 1)} vote_p99_ms={fmt(p99, 1)} lost={lost}"
    )


if __name__ == "__main__":
    main()
