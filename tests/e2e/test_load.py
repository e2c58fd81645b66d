"""20 labelers voting through the real server while it is SIGKILLed and restarted: every acknowledged vote
is in the database afterwards, none twice (the shorter CI twin of bench/load.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from load import run  # noqa: E402  (bench/load.py)

pytest.importorskip("httpx")


@pytest.mark.slow
@pytest.mark.alone  # it needs >100 votes acknowledged in the 16 s after the restart: a busy machine restarts slower
def test_acknowledged_votes_survive_kill_9_and_none_is_stored_twice():
    lines: list[str] = []
    result = run(seconds=24, labelers=20, kill_at=8, say=lines.append)
    assert result["acked_before_kill"] > 100, lines  # the load was real before the crash
    assert result["acked"] > result["acked_before_kill"] + 100, lines  # and went on after the restart
    assert result["lost"] == 0 and result["duplicated"] == 0, lines
    assert result["outage_s"] > 0
