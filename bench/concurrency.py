"""Concurrency benchmark: N labelers ask for a pair at the same time, through the route the browser uses.

A real server (`launch.py --model default` on loopback, fresh data dir) is started; each simulated labeler is a
gradio_client session on the labeling app calling its `send` event through Gradio's queue, exactly what the
browser does when a labeler presses Send (the answer streams back over server-sent events). Every request asks
for a pair with max_new_tokens=64, greedy (temperature 0) so that the same prompt costs the same tokens alone
and in a crowd.

  alone_p50_s   median time for a pair (send -> both answers complete) with nobody else generating: each labeler's
                prompt once, one after the other
  p50_s, p95_s  the same prompts, all N labelers pressing Send at the same moment
  slowdown      p50_s / alone_p50_s, measured in this run (target <= 2.0)
  tok_s         generated tokens per second over the concurrent round (both answers of every pair)

--inference-url URL runs the same with the server sending generation to that OpenAI-compatible engine.
Last line: RESULT labelers=... alone_p50_s=... p50_s=... p95_s=... slowdown=... tok_s=...
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from votegen import StudioProcess, percentile  # noqa: E402

PROMPTS = [
    "Give me three tips for a good night's sleep.",
    "What is the difference between weather and climate?",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "Explain what a prime number is to a child.",
    "Suggest a name for a friendly robot.",
    "Why do leaves change colour in autumn?",
    "What should I pack for a day hike?",
    "How does a bicycle stay upright?",
    "Describe the taste of a lemon.",
    "What is a good way to learn a new language?",
    "Tell me a fun fact about octopuses.",
    "How can I save money on groceries?",
    "What makes a good cup of tea?",
    "Explain gravity in two sentences.",
    "List three things to do on a rainy day.",
]
MAX_NEW_TOKENS = 64


def say(line: str) -> None:
    print(line, flush=True)


class Labeler:
    """One browser session on the labeling app."""

    def __init__(self, url: str) -> None:
        from gradio_client import Client

        self.client = Client(f"{url}/label/", verbose=False)

    def pair(self, prompt: str) -> tuple[float, str, str]:
        """Press Send; (seconds until both answers are complete, answer A, answer B)."""
        started = time.perf_counter()
        from app.label import SAME_POLICY

        job = self.client.submit(prompt, "base", SAME_POLICY, 0.0, 0.9, MAX_NEW_TOKENS, api_name="/send")
        outputs = job.result(timeout=600)
        elapsed = time.perf_counter() - started
        _, _, text_a, text_b, status, *_ = outputs
        if not str(status).startswith(("Pick", "⚠️ Your message")):
            raise RuntimeError(f"the pair did not complete: {status!r}")
        return elapsed, text_a, text_b


def count_tokens(texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "tokenizer"))
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)


def crowd(url: str, prompts: list[str]) -> tuple[list[float], list[str], float]:
    """Every labeler presses Send at the same moment; (latencies, answers, wall seconds)."""
    labelers = [Labeler(url) for _ in prompts]
    gate = threading.Barrier(len(prompts) + 1)
    results: list = [None] * len(prompts)

    def run(i: int) -> None:
        gate.wait()
        try:
            results[i] = labelers[i].pair(prompts[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(prompts)} labelers failed: {errors[0]!r}")
    return [r[0] for r in results], [t for r in results for t in r[1:]], wall


def run(labelers: int, model: str, inference_url: str | None) -> dict[str, float]:
    prompts = (PROMPTS * (labelers // len(PROMPTS) + 1))[:labelers]
    with tempfile.TemporaryDirectory(prefix="studio-concurrency-") as tmp:
        extra = ("--inference-url", inference_url) if inference_url else ()
        server = StudioProcess(Path(tmp) / "data", Path(tmp) / "server.log", model=model, extra=extra)
        say(f"server up at {server.url} in {server.start():.1f} s (model {model}"
            + (f", engine {inference_url})" if inference_url else ")"))
        try:
            warm = Labeler(server.url)
            say(f"warm-up pair: {warm.pair('Hello!')[0]:.2f} s")
            alone = []
            for prompt in prompts:
                seconds, _, _ = Labeler(server.url).pair(prompt)
                alone.append(seconds)
            say(f"alone: {', '.join(f'{s:.2f}' for s in alone)} s")
            latencies, answers, wall = crowd(server.url, prompts)
            say(f"{labelers} at once: {', '.join(f'{s:.2f}' for s in sorted(latencies))} s, wall {wall:.2f} s")
        finally:
            server.stop()
    alone_p50, p50 = statistics.median(alone), statistics.median(latencies)
    return {"labelers": labelers, "alone_p50_s": round(alone_p50, 2), "p50_s": round(p50, 2),
            "p95_s": round(percentile(latencies, 95), 2), "slowdown": round(p50 / alone_p50, 2),
            "tok_s": round(count_tokens(answers) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labelers", type=int, default=8)
    parser.add_argument("--model", default="default", help="the server's --model (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--inference-url", help="an OpenAI-compatible engine the server should use")
    args = parser.parse_args()
    result = run(args.labelers, args.model, args.inference_url)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
