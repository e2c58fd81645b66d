"""Durability benchmark: a studio with 10k votes and 3 versions backs up to a Hub dataset repo while labelers vote,
is killed (-9), and comes back on an empty disk.

Steps, on a fresh data dir and the project's Hub stand-in (the real huggingface_hub client speaks to it over
loopback, as to huggingface.co):
  1. --votes votes (through core, as the labeling app writes them) and --versions versions, each a real LoRA adapter
     on the base model (--model, default: the default model), registered as a training job registers them.
  2. `launch.py --backup-repo ... --backup-every E` serves; --labelers threads vote back to back through
     POST /api/votes (bench/votegen.py).
     A quiet phase measures the vote latency without a backup; then admins' POST /api/backup back to back for
     a while measures it during backups.
  3. Voting stops; rpo_s is the time from the last acknowledged vote until a good backup holds it (scheduled,
     not asked for: the target is at most E + 30 s).
  4. SIGKILL, the data dir wiped, `restore` into it from the Hub: restore_s; lost = acknowledged votes missing.

Figures: backup_s (one full backup of the seeded studio, the first one: every adapter uploaded), rpo_s,
restore_s, vote_p95_ms (no backup running) and vote_p95_ms_during_backup.
Last line: RESULT votes=... versions=... restored_votes=... lost=... rpo_s=... restore_s=... backup_s=...
vote_p95_ms=... vote_p95_ms_during_backup=... p95_ratio=...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from votegen import StudioProcess, VoteLoad, percentile, stored_keys  # noqa: E402

from bench.harness.versions import random_versions  # noqa: E402

TOKEN = "hf_durability_bench_token_0001"
REPO = "bench/studio-backup"


def say(line: str) -> None:
    print(line, flush=True)


def seed(data_dir: Path, model: str, votes: int, versions: int) -> None:
    """Votes through core's own functions and LoRA versions on the base model, with the server stopped."""
    from app.cli import prepare_model
    from core.config import load_settings
    from core.labeling.identity import ensure_user
    from core.labeling.votes import CandidateIn, Vote, add_user_message, new_conversation, record_vote, save_pair
    from storage.db import Database

    settings = load_settings({"data_dir": str(data_dir), "model": model}, env={})
    base_path = prepare_model(settings)
    db = Database(settings.db_path)
    try:
        people = [ensure_user(db, f"labeler-{i}", "labeler", "bench") for i in range(8)]
        started = time.monotonic()
        for i in range(votes):
            who = people[i % len(people)]
            conv = new_conversation(db, who, 1)
            turn = add_user_message(db, who, conv, f"Seeded question {i}: which answer is clearer?")
            a, b = save_pair(
                db,
                conv,
                turn,
                None,
                CandidateIn(f"A clear answer number {i}.", 1),
                CandidateIn(f"Another answer, {i}.", 1),
                None,
            )
            record_vote(db, who, Vote(a, b, ("a", "b", "tie")[i % 3]))
            if (i + 1) % 2000 == 0:
                say(f"  {i + 1} votes seeded ({time.monotonic() - started:.0f} s)")
        random_versions(db, settings.runs_dir, model, base_path, versions)
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--model", default="default")
    parser.add_argument("--every", type=int, default=60, help="--backup-every of the served studio")
    parser.add_argument("--labelers", type=int, default=4)
    parser.add_argument("--quiet-s", type=float, default=20, help="voting with no backup running")
    parser.add_argument("--backups", type=int, default=4, help="backups asked for back to back while voting")
    args = parser.parse_args()

    import httpx

    from bench.harness.hub_standin import HubStandin
    from core.share.backup import HubTarget, restore

    with tempfile.TemporaryDirectory(prefix="studio-durability-") as tmp:
        tmp_path = Path(tmp)
        hub = HubStandin(tmp_path / "hub", {TOKEN: ("bench", "write")}).start()
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
        os.environ.update(env)
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = False
        data_dir = tmp_path / "data"
        t0 = time.monotonic()
        seed(data_dir, args.model, args.votes, args.versions)
        say(f"seeded {args.votes} votes and {args.versions} versions on {args.model} in {time.monotonic() - t0:.0f} s")

        server = StudioProcess(
            data_dir,
            tmp_path / "server.log",
            model=args.model,
            extra=("--backup-repo", REPO, "--backup-every", str(args.every)),
        )
        say(f"server up in {server.start():.1f} s")

        def health() -> dict:
            return httpx.get(server.url + "/api/health", timeout=30).json()["backup"]

        first = httpx.post(server.url + "/api/backup", timeout=600)
        assert first.status_code == 200, first.text
        backup_s = health()["last_seconds"]
        say(f"first full backup: {backup_s:.1f} s ({first.json()['title']})")

        voters = VoteLoad(server.url, args.labelers).start()
        time.sleep(args.quiet_s)
        quiet_until = time.monotonic()
        windows = []
        for _ in range(args.backups):
            start = time.monotonic()
            reply = httpx.post(server.url + "/api/backup", timeout=600)
            assert reply.status_code == 200, reply.text
            windows.append((start, time.monotonic()))
            time.sleep(1.0)
        voters.stop()
        last_ack = voters.last_ack_wall
        timeline = list(zip(voters.sent_at, (lat * 1000 for _, lat in voters.acked)))
        quiet = sorted(ms for sent, ms in timeline if sent < quiet_until)
        during = sorted(ms for sent, ms in timeline if any(a <= sent <= b for a, b in windows))
        p95_quiet, p95_during = percentile(quiet, 0.95), percentile(during, 0.95)
        say(
            f"votes: {len(voters.acked)} acknowledged; p95 {p95_quiet:.0f} ms with no backup ({len(quiet)} votes), "
            f"{p95_during:.0f} ms during backups ({len(during)} votes in {sum(b - a for a, b in windows):.1f} s)"
        )

        # rpo: a scheduled backup (not asked for) that started after the last acknowledged vote holds it
        while True:
            state = health()
            began = state.get("last_started_at")
            if began and datetime.fromisoformat(began).timestamp() >= last_ack:
                rpo_s = datetime.fromisoformat(state["last_good_at"]).timestamp() - last_ack
                break
            if time.time() - last_ack > args.every + 120:
                rpo_s = float("inf")
                break
            time.sleep(0.5)
        say(f"rpo: the last acknowledged vote was in a backup {rpo_s:.1f} s later (interval {args.every} s)")

        server.kill()
        shutil.rmtree(data_dir)
        started = time.monotonic()
        result = restore(HubTarget(REPO), data_dir)
        restore_s = time.monotonic() - started
        say(f"{result.line()} in {restore_s:.1f} s")
        stored = stored_keys(data_dir)
        lost = sum(1 for key, _ in voters.acked if key not in stored)
        say(f"lost: {lost} of {len(voters.acked)} acknowledged live votes")
        hub.stop()
    ratio = p95_during / p95_quiet if p95_quiet else float("nan")
    say(
        f"RESULT votes={args.votes} versions={result.versions} restored_votes={result.votes} lost={lost} "
        f"rpo_s={rpo_s:.1f} restore_s={restore_s:.1f} backup_s={backup_s:.1f} vote_p95_ms={p95_quiet:.0f} "
        f"vote_p95_ms_during_backup={p95_during:.0f} p95_ratio={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
