"""The studio as bench/efficacy.py's labelers reach it: the Gradio label app samples pairs, the REST API takes
votes, jobs and reports. Also the default model, converted once into a cache and linked into each fresh data dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
# the same cache as bench/labeling.py: the default model is converted there once and linked into each data dir
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "rlhf-studio-bench"
DEFAULT_MODEL_DIR = "SmolLM2-135M-Instruct"
SAME_VERSION = "(same version: two samples)"  # app.label.SAME_VERSION: "Compare with" = two samples of Version
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


def say(line: str) -> None:
    print(line, flush=True)


# --- the studio: server, label app, REST ------------------------------------------------------------------


def link_default_model(data_dir: Path) -> None:
    """Convert the default model once into DEFAULT_CACHE, then hard-link it into the fresh data dir."""
    cached = DEFAULT_CACHE / "models" / DEFAULT_MODEL_DIR
    if not (cached / "config.json").is_file():
        say(f"setup: converting the default model once into {DEFAULT_CACHE} ...")
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "launch.py"),
                "provision",
                "--data-dir",
                str(DEFAULT_CACHE),
                "--model",
                "default",
            ],
            cwd=ROOT,
            check=True,
        )
    target = data_dir / "models" / DEFAULT_MODEL_DIR
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(cached, target, copy_function=os.link)
        except OSError:  # another file system: copy
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(cached, target)


@dataclass
class Sampling:
    temperature: float
    top_p: float
    max_new_tokens: int


# the label app's status line when an answer hit max_new_tokens (core.serving.generate.PairUpdate.cut_note)
CUT_NOTE = re.compile(r"(Both answers were|Answer [AB] was) cut at the length limit")


class Pair(NamedTuple):
    a: str
    b: str
    cut: tuple[bool, bool]  # each answer stopped at max_new_tokens


class Studio:
    """The two doors a labeler uses: the Gradio label app (sampling) and the REST API (votes, jobs, reports)."""

    def __init__(self, url: str, sampling: Sampling) -> None:
        import httpx
        from gradio_client import Client

        self.url, self.sampling = url, sampling
        self.http = httpx.Client(base_url=url, timeout=60)
        self.label = Client(url + "/label/", verbose=False)

    def pair(self, prompt: str, policy: str = "base", compare_with: str = SAME_VERSION) -> Pair:
        """Answers A (policy) and B (compare_with, or a second sample of policy): one batched call, as the
        UI's Send button does; then New chat, so the next prompt starts a fresh conversation. Which answers hit
        the length limit is read from the status line the labeler sees."""
        s = self.sampling
        _, _, text_a, text_b, status = self.label.predict(
            prompt, policy, compare_with, s.temperature, s.top_p, s.max_new_tokens, api_name="/send"
        )
        self.label.predict(api_name="/new_chat")
        said = CUT_NOTE.search(status or "")
        which = said.group(1) if said else ""
        return Pair(
            text_a,
            text_b,
            (which in ("Both answers were", "Answer A was"), which in ("Both answers were", "Answer B was")),
        )

    def vote(
        self,
        prompt: str,
        answer_a: str,
        answer_b: str,
        outcome: str,
        labeler: str,
        key: str,
        cut: tuple[bool | None, bool | None] = (None, None),
    ) -> None:
        response = self.http.post(
            "/api/votes",
            json={
                "prompt": prompt,
                "answer_a": answer_a,
                "answer_b": answer_b,
                "outcome": outcome,
                "labeler": labeler,
                "idempotency_key": key,
                "cut_a": cut[0],
                "cut_b": cut[1],
            },
        )
        if response.status_code >= 300:
            raise RuntimeError(f"POST /api/votes -> {response.status_code}: {response.text[:500]}")

    def submit_job(self, labeler: str, hyperparams: dict[str, Any] | None = None) -> int:
        body: dict[str, Any] = {"algorithm": "dpo", "parent": "base", "filters": {"labelers": [labeler]}}
        if hyperparams:
            body["hyperparams"] = hyperparams
        response = self.http.post("/api/jobs", json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"POST /api/jobs -> {response.status_code}: {response.text[:500]}")
        return int(response.json()["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def report(self, version: str) -> tuple[str, dict[str, Any]]:
        """('ready' | 'computing' | 'none' (not asked for yet) | 'missing_route' | 'error', JSON body)."""
        response = self.http.get(f"/api/policies/{version}/report")
        try:
            body = response.json()
        except ValueError:
            body = {"text": response.text[:300]}
        if response.status_code == 200:
            return "ready", body
        if response.status_code == 202:
            return "computing", body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if response.status_code == 405 or (response.status_code == 404 and error.get("message") == "Not Found"):
            return "missing_route", body  # Starlette's own 404: there is no such route
        if response.status_code == 404:
            return "none", body
        return "error", {"status": response.status_code, **(body if isinstance(body, dict) else {})}

    def close(self) -> None:
        self.http.close()
        self.label.close()
