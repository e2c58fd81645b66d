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
  in_process_slowdown  the same crowd straight on the scheduler (no HTTP, no Gradio, every pair forced to 64
                tokens): what batching 16 rows instead of 2 costs on this CPU, the floor under `slowdown`

--inference-url URL (and --inference-model NAME) runs the same with the server sending generation to that
OpenAI-compatible engine; --transformers-serve starts one (`transformers serve` pinned to the default model, with
continuous batching) on loopback for the run.
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

from bench.harness.engine import EngineProcess  # noqa: E402

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
        from app.label_sections import SAME_VERSION

        job = self.client.submit(prompt, "base", SAME_VERSION, 0.0, 0.9, MAX_NEW_TOKENS, api_name="/send")
        outputs = job.result(timeout=600)
        elapsed = time.perf_counter() - started
        _, _, text_a, text_b, status, *_ = outputs
        if not str(status).startswith(("Pick", "⚠️ Your message")):
            raise RuntimeError(f"the pair did not complete: {status!r}")
        return elapsed, text_a, text_b


def cpu_seconds(pid: int | None) -> float:
    """CPU time used so far by a process (None: this one, where the simulated browsers run)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def in_process_slowdown(model: str, data_dir: Path, labelers: int) -> float:
    """The same crowd without HTTP or Gradio: pairs forced to MAX_NEW_TOKENS straight on the scheduler, 8 at once
    vs one alone (median). The part of the slowdown that batching itself costs on this CPU."""
    from core.serving.generate import SamplingParams, generate_pair
    from core.serving.models import load_model, resolve_model

    loaded, tokenizer = load_model(resolve_model(model, data_dir), dtype="float32")
    greedy = SamplingParams(temperature=0, max_new_tokens=MAX_NEW_TOKENS)
    prompts = (PROMPTS * (labelers // len(PROMPTS) + 1))[:labelers]

    def pair(prompt: str) -> float:
        started = time.perf_counter()
        generate_pair(loaded, tokenizer, [{"role": "user", "content": prompt}], greedy, min_new_tokens=MAX_NEW_TOKENS)
        return time.perf_counter() - started

    def timed_threads(group: list[str]) -> list[float]:
        out: list[float] = [0.0] * len(group)
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, pair(group[i]))) for i in range(len(group))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    timed_threads(prompts[:1])  # warm-up
    alone = [timed_threads([p])[0] for p in prompts]
    return statistics.median(timed_threads(prompts)) / statistics.median(alone)


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


def start_transformers_serve(model_dir: Path, work: Path) -> EngineProcess:
    """`transformers serve` pinned to ``model_dir`` with continuous batching, on a free loopback port.

    The tests' engine launcher (bench/harness/engine.py) with the batching option: one start / wait / stop
    for both; the first start loads the model, hence the longer wait."""
    return EngineProcess(model_dir, work, args=("--continuous-batching",)).start(timeout=300)


def run(
    labelers: int,
    model: str,
    inference_url: str | None,
    inference_model: str | None = None,
    transformers_serve: bool = False,
) -> dict[str, float]:
    prompts = (PROMPTS * (labelers // len(PROMPTS) + 1))[:labelers]
    with tempfile.TemporaryDirectory(prefix="studio-concurrency-") as tmp:
        engine = None
        if transformers_serve:
            from core.serving.models import provision_default_model

            model_dir = provision_default_model(Path(tmp) / "data")
            engine = start_transformers_serve(model_dir, Path(tmp))
            inference_url = engine.url
            inference_model = str(model_dir)
        extra = ("--inference-url", inference_url) if inference_url else ()
        extra += ("--inference-model", inference_model) if inference_model else ()
        server = StudioProcess(Path(tmp) / "data", Path(tmp) / "server.log", model=model, extra=extra)
        say(
            f"server up at {server.url} in {server.start():.1f} s (model {model}"
            + (f", engine {inference_url})" if inference_url else ")")
        )
        try:
            warm = Labeler(server.url)
            say(f"warm-up pair: {warm.pair('Hello!')[0]:.2f} s")
            alone = []
            for prompt in prompts:
                seconds, _, _ = Labeler(server.url).pair(prompt)
                alone.append(seconds)
            say(f"alone: {', '.join(f'{s:.2f}' for s in alone)} s")
            server_cpu, client_cpu = cpu_seconds(server.proc.pid), cpu_seconds(None)
            latencies, answers, wall = crowd(server.url, prompts)
            say(
                f"CPU seconds during the crowd: server {cpu_seconds(server.proc.pid) - server_cpu:.1f}, "
                f"simulated browsers {cpu_seconds(None) - client_cpu:.1f}, over {wall:.1f} s on "
                f"{os.cpu_count()} cores"
            )
            say(f"{labelers} at once: {', '.join(f'{s:.2f}' for s in sorted(latencies))} s, wall {wall:.2f} s")
        finally:
            server.stop()
            if engine is not None:
                engine.stop()
        batching = None if inference_url else in_process_slowdown(model, Path(tmp) / "data", labelers)
    alone_p50, p50 = statistics.median(alone), statistics.median(latencies)
    result = {
        "labelers": labelers,
        "alone_p50_s": round(alone_p50, 2),
        "p50_s": round(p50, 2),
        "p95_s": round(percentile(latencies, 95), 2),
        "slowdown": round(p50 / alone_p50, 2),
        "tok_s": round(count_tokens(answers) / wall, 1),
    }
    if batching is not None:
        result["in_process_slowdown"] = round(batching, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labelers", type=int, default=8)
    parser.add_argument("--model", default="default", help="the server's --model (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--inference-url", help="an OpenAI-compatible engine the server should use")
    parser.add_argument("--inference-model", help="the model name to request from it")
    parser.add_argument(
        "--transformers-serve",
        action="store_true",
        help="start `transformers serve` with the default model on loopback and use it",
    )
    args = parser.parse_args()
    result = run(args.labelers, args.model, args.inference_url, args.inference_model, args.transformers_serve)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
