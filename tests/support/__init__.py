"""Helpers the tests share, by topic; fixtures stay in tests/conftest.py, which builds them from these.

  processes    start a child process, wait until its URL answers, capture its log, stop it (tests and bench)
  servers      the studio (`launch.py`, `make run`) and the inference engine (`transformers serve`) as processes
  studios      in-process studios, team users files, labels seeded through core, random LoRA versions, polling
  browser      headless Chromium, screenshots, and the labeling app driven like a person does
  chain        a database with three people's labels and linked wallets for the proof-of-contribution tests
  hub_standin  a loopback stand-in for the Hugging Face Hub's HTTP API
  oidc_standin a loopback OpenID Connect provider standing in for "Sign in with Hugging Face"

Test modules import from here, never from each other or from conftest (pytest imports conftest under its own
name, so `from tests.conftest import X` would load it twice)."""
from __future__ import annotations

from core import ROOT

ARTIFACTS = ROOT / "test-artifacts"   # screenshots of the browser tests, kept for people to look at

__all__ = ["ARTIFACTS", "ROOT"]
