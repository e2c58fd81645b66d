"""Helpers the tests share, by topic; fixtures stay in tests/conftest.py, which builds them from these.

  servers      the studio (`launch.py`, `make run`) as a process, polling it (`wait_for`, `job_status`)
  studios      in-process studios, team users files, labels seeded through core, random LoRA adapters
  browser      headless Chromium, screenshots, and the labeling app driven like a person does
  chain        a database with three people's labels and linked wallets for the proof-of-contribution tests
  oidc_standin a loopback OpenID Connect provider standing in for "Sign in with Hugging Face"

What the benchmarks use too (the process launcher, the inference engine, random versions, the Hub stand-in)
lives in bench/harness/, which bench/ and the tests both import.

Test modules import from here or bench.harness, never from each other or from conftest (pytest imports conftest
under its own name, so `from tests.conftest import X` would load it twice)."""

from __future__ import annotations

from core import ROOT

ARTIFACTS = ROOT / "test-artifacts"  # screenshots of the browser tests, kept for people to look at

__all__ = ["ARTIFACTS", "ROOT"]
