"""Integration against a real standalone node on loopback: anvil (npm @foundry-rs/anvil, `make anvil`).

Deploy with the CLI, anchor through an RPC outage (node frozen -> timeouts, node absent -> refused),
recover exactly once, claim, verify; the operator key never shows up in errors, logs or the database.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.harness.processes import free_port, launch
from core.chain import proofs, service as service_module, views
from core.chain.errors import ChainError, ChainUnavailable
from core.chain.service import ChainService
from core.config import load_settings
from tests.support import ROOT
from tests.support.chain import seed_labels

pytestmark = pytest.mark.slow
# The platform package's native binary (the npm `.bin/anvil` is a node launcher: signals must reach the node).
ANVIL = next(
    iter(sorted((ROOT / ".tools" / "anvil" / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))),
    ROOT / ".tools" / "anvil" / "node_modules" / ".bin" / "anvil",
)
# anvil's first development account (public test key, funded at genesis)
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@pytest.fixture
def anvil(tmp_path):
    if not ANVIL.exists():
        pytest.fail(f"anvil is not installed at {ANVIL}: run `make anvil`")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = launch(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337"],
        url,
        tmp_path / "anvil.log",
        name="anvil",
        timeout=30,
        cwd=ROOT,
        ready=answers_json_rpc,
    )
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(timeout=10)


def answers_json_rpc(url: str) -> bool:
    httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
    return True


def _deploy(url: str, tmp_path: Path) -> str:
    env = {**os.environ, "STUDIO_CHAIN_OPERATOR_KEY": ANVIL_KEY, "STUDIO_CHAIN_RPC_URL": url}
    out = subprocess.run(
        [sys.executable, "launch.py", "chain", "deploy", "--cache-dir", str(tmp_path / "build")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert ANVIL_KEY[2:] not in out.stdout + out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert lines["STUDIO_CHAIN_ID"] == "31337"
    return lines["STUDIO_CHAIN_CONTRACT"]


def _service(data_dir: Path, url: str, contract: str) -> ChainService:
    settings = load_settings(
        {"data_dir": str(data_dir), "model": "tiny"},
        env={"STUDIO_CHAIN_RPC_URL": url, "STUDIO_CHAIN_ID": "31337", "STUDIO_CHAIN_CONTRACT": contract},
    )
    return settings


def test_anvil_outage_recovery_claim_verify_and_key_secrecy(anvil, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(service_module, "RPC_TIMEOUT_SECONDS", 2.0)
    proc, url = anvil
    contract = _deploy(url, tmp_path)
    labels = seed_labels(tmp_path / "data")
    db = labels.db
    errors: list[str] = []
    key_env = {"STUDIO_CHAIN_OPERATOR_KEY": ANVIL_KEY}

    # node absent: nothing answers on that port -> the batch is cut and stays queued
    down = ChainService(_service(tmp_path / "data", f"http://127.0.0.1:{free_port()}", contract), db, env=key_env)
    batch_id = down.cut_batch("admin")
    with pytest.raises(ChainUnavailable) as refused:
        down.anchor()
    errors.append(str(refused.value))
    assert db.scalar("SELECT status FROM chain_batches WHERE id = ?", [batch_id]) == "queued"

    service = ChainService(_service(tmp_path / "data", url, contract), db, env=key_env)
    ledger = service.ledger()
    assert ledger.chain_id == 31337 and ledger.address == contract

    # node frozen (SIGSTOP): requests time out -> queued with the error and a later retry time
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        assert service.anchor() == []
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    row = db.query("SELECT * FROM chain_batches WHERE id = ?", [batch_id])[0]
    errors.append(row["last_error"])
    assert row["status"] == "queued" and row["attempts"] == 1
    assert row["last_error"].startswith("[chain_unavailable]")
    assert db.scalar("SELECT next_attempt_at > current_timestamp FROM chain_batches WHERE id = ?", [batch_id])
    service.tick()  # not due yet: nothing is sent
    assert db.scalar("SELECT attempts FROM chain_batches WHERE id = ?", [batch_id]) == 1

    # recovery: the retry anchors exactly once
    assert service.anchor(include_not_due=True) == [batch_id]
    assert service.anchor(include_not_due=True) == []
    ledger = service.ledger()
    assert len(ledger.contract.events.BatchAnchored().get_logs(from_block=0)) == 1
    row = db.query("SELECT * FROM chain_batches WHERE id = ?", [batch_id])[0]
    assert row["status"] == "anchored" and row["chain_id"] == 31337 and row["gas_used"] > 0
    assert "0x" + ledger.root_of(batch_id).hex() == row["root"]

    for c in db.query("SELECT id FROM contributions WHERE batch_id IS NOT NULL"):
        assert proofs.verify_contribution(db, ledger, c["id"]).ok

    amount = views.amounts_of(db, labels.bob.id)["claimable"]
    proofs.claim(db, ledger, batch_id, labels.bob.id)
    assert ledger.balance_of(labels.bob_key.address) == amount > 0
    leaf, proof, _ = proofs.account_proof(db, batch_id, labels.bob.id)
    subroot = bytes.fromhex(leaf["subroot"][2:])
    with pytest.raises(ChainError, match="already claimed") as twice:
        ledger.claim(batch_id, leaf["address"], int(leaf["amount"]), subroot, proof)
    errors.append(str(twice.value))
    a_leaf, a_proof, _ = proofs.account_proof(db, batch_id, labels.alice.id)
    with pytest.raises(ChainError, match="invalid proof") as tampered:
        ledger.claim(
            batch_id, a_leaf["address"], int(a_leaf["amount"]) + 1, bytes.fromhex(a_leaf["subroot"][2:]), a_proof
        )
    errors.append(str(tampered.value))
    assert ledger.balance_of(labels.alice_key.address) == 0

    # the key is nowhere: errors, logs, reprs, any table of the database
    dump = []
    for (table,) in db.cursor().execute("SELECT table_name FROM duckdb_tables()").fetchall():
        dump.append(json.dumps(db.query(f'SELECT * FROM "{table}"'), default=str))
    haystack = "\n".join(errors + dump + [caplog.text, repr(ledger.operator), str(service.describe())]).lower()
    assert ANVIL_KEY[2:].lower() not in haystack
    assert ledger.operator.address.lower() in haystack  # the address is public and shown
    db.close()
