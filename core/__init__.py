"""RLHF Studio core: all logic, no UI code."""

from pathlib import Path

__version__ = "0.1.0"

ROOT = Path(__file__).resolve().parent.parent  # the checkout: child processes run from here
ASSETS = ROOT / "assets"  # shipped files: tokenizer, prompts, guidelines, contracts
