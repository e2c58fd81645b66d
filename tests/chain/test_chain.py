"""Contributions -> batch -> root anchored on the embedded chain -> claim; proofs; restart; idempotency."""

from __future__ import annotations

import pytest

from core.chain import contributions as cb, proofs, views
from core.chain.errors import ChainError
from core.chain.local import open_embedded
from tests.support.chain import seed_labels


@pytest.fixture
def labels(tmp_path):
    labels = seed_labels(tmp_path / "data")
    yield labels
    labels.db.close()


def _kinds(db, user_id):
    return {
        r["kind"]: r["n"]
        for r in db.query("SELECT kind, count(*) AS n FROM contributions WHERE user_id = ? GROUP BY kind", [user_id])
    }


def test_collect_derives_every_kind_once_with_agreement_weights(labels):
    db = labels.db
    assert cb.collect_contributions(db) == 10
    assert cb.collect_contributions(db) == 0  # idempotent: one contribution per source row
    assert _kinds(db, labels.alice.id) == {"vote": 2, "rating": 1, "training": 1, "admin_validation": 1}
    assert _kinds(db, labels.bob.id) == {"vote": 2, "rating": 1, "gold_edit": 1}
    weights = {
        (r["user_id"], r["source_id"]): r["weight"]
        for r in db.query("SELECT user_id, source_id, weight FROM contributions WHERE kind = 'vote'")
    }
    # prompt 1: a, a, b -> the two majority voters 2/3, carol 1/3; prompt 2: a split, 1/2 each
    assert weights[(labels.alice.id, 1)] == pytest.approx(2 / 3)
    assert weights[(labels.carol.id, 3)] == pytest.approx(1 / 3)
    assert weights[(labels.bob.id, 5)] == pytest.approx(0.5)
    job = db.query("SELECT amount FROM contributions WHERE kind = 'training'")[0]
    assert job["amount"] == 3 * 2 * cb.TOKEN  # 25 minutes of compute = 3 started 10-minute units
    hashes = [r["content_hash"] for r in db.query("SELECT content_hash FROM contributions")]
    assert len(set(hashes)) == len(hashes) and all(len(h) == 66 for h in hashes)
    # the salt stays off chain; with it, the hash is recomputed from the source row
    c = db.query("SELECT * FROM contributions WHERE kind = 'gold_edit'")[0]
    assert cb.content_hash(c["salt"], c["source_table"], cb.source_content(db, c)) == c["content_hash"]


def test_batch_anchor_claim_verify_on_embedded_chain(labels, tmp_path):
    db = labels.db
    cb.collect_contributions(db)
    batch_id = cb.make_batch(db, "admin")
    batch = db.query("SELECT * FROM chain_batches WHERE id = ?", [batch_id])[0]
    assert batch["contributors"] == 2 and batch["contributions"] == 9  # carol has no wallet: stays pending
    assert db.scalar("SELECT count(*) FROM contributions WHERE batch_id IS NULL") == 1
    assert cb.make_batch(db, "admin") is None

    ledger = open_embedded(db, tmp_path / "build")
    assert ledger.root_of(batch_id) is None
    assert cb.anchor_due(db, ledger) == [batch_id]
    batch = db.query("SELECT * FROM chain_batches WHERE id = ?", [batch_id])[0]
    assert batch["status"] == "anchored" and batch["tx_hash"].startswith("0x") and batch["gas_used"] > 0
    assert "0x" + ledger.root_of(batch_id).hex() == batch["root"]

    for c in db.query("SELECT id FROM contributions WHERE batch_id IS NOT NULL"):
        result = proofs.verify_contribution(db, ledger, c["id"])
        assert result.ok, result

    alice_amount = views.amounts_of(db, labels.alice.id)["claimable"]
    assert alice_amount > 0
    proofs.claim(db, ledger, batch_id, labels.alice.id)
    assert ledger.balance_of(labels.alice_key.address) == alice_amount
    assert views.amounts_of(db, labels.alice.id) == {
        "pending": 0,
        "batched": 0,
        "claimable": 0,
        "claimed": alice_amount,
    }

    leaf, proof, _ = proofs.account_proof(db, batch_id, labels.alice.id)
    subroot = bytes.fromhex(leaf["subroot"][2:])
    with pytest.raises(ChainError, match="already claimed"):  # on chain, not just the DB check
        ledger.claim(batch_id, leaf["address"], int(leaf["amount"]), subroot, proof)
    assert ledger.balance_of(labels.alice_key.address) == alice_amount

    # tampered proofs: bob cannot claim more, or with a forged sibling
    bob_leaf, bob_proof, _ = proofs.account_proof(db, batch_id, labels.bob.id)
    bob_sub = bytes.fromhex(bob_leaf["subroot"][2:])
    assert ledger.verify_leaf(batch_id, bob_leaf["address"], int(bob_leaf["amount"]), bob_sub, bob_proof)
    assert not ledger.verify_leaf(batch_id, bob_leaf["address"], int(bob_leaf["amount"]) + 1, bob_sub, bob_proof)
    with pytest.raises(ChainError, match="invalid proof"):
        ledger.claim(batch_id, bob_leaf["address"], int(bob_leaf["amount"]) * 2, bob_sub, bob_proof)
    with pytest.raises(ChainError, match="invalid proof"):
        ledger.claim(batch_id, bob_leaf["address"], int(bob_leaf["amount"]), bob_sub, [bytes(32)] + bob_proof[1:])
    assert ledger.balance_of(bob_leaf["address"]) == 0

    # a contribution whose stored amount was tampered with no longer verifies
    c = db.query("SELECT id FROM contributions WHERE user_id = ? AND batch_id IS NOT NULL LIMIT 1", [labels.bob.id])[0]
    db.write(lambda cur: cur.execute("UPDATE contributions SET amount = amount + 1 WHERE id = ?", [c["id"]]))
    assert not proofs.verify_contribution(db, ledger, c["id"]).ok


def test_restart_rebuilds_the_same_chain_state(labels, tmp_path):
    db = labels.db
    cb.collect_contributions(db)
    first = cb.make_batch(db, "admin")
    ledger = open_embedded(db, tmp_path / "build")
    cb.anchor_due(db, ledger)
    proofs.claim(db, ledger, first, labels.bob.id)
    db.write(
        lambda cur: cur.execute(
            "INSERT INTO preferences (prompt_id, outcome, labeler_id) VALUES (1, 'a', ?)", [labels.alice.id]
        )
    )
    cb.collect_contributions(db)
    second = cb.make_batch(db, "count")
    cb.anchor_due(db, ledger)
    before = (
        ledger.root_of(first),
        ledger.root_of(second),
        ledger.balance_of(labels.bob_key.address),
        ledger.is_claimed(first, labels.bob_key.address),
        ledger.is_claimed(first, labels.alice_key.address),
        ledger.address,
    )
    tx_rows = db.query("SELECT tx_hash, block_number FROM chain_txs ORDER BY id")

    restarted = open_embedded(db, tmp_path / "build")  # a new process: fresh py-evm, replayed from the DB
    after = (
        restarted.root_of(first),
        restarted.root_of(second),
        restarted.balance_of(labels.bob_key.address),
        restarted.is_claimed(first, labels.bob_key.address),
        restarted.is_claimed(first, labels.alice_key.address),
        restarted.address,
    )
    assert after == before and before[2] > 0 and before[3] and not before[4]
    assert db.query("SELECT tx_hash, block_number FROM chain_txs ORDER BY id") == tx_rows
    event = restarted.anchor_event(second)
    assert (event.tx_hash, event.block_number) == tuple(
        db.query("SELECT tx_hash, block_number FROM chain_batches WHERE id = ?", [second])[0].values()
    )
    proofs.claim(db, restarted, first, labels.alice.id)  # the chain keeps working after the rebuild
    assert restarted.is_claimed(first, labels.alice_key.address)


def test_lost_receipt_is_found_on_chain_not_anchored_twice(labels, tmp_path):
    db = labels.db
    cb.collect_contributions(db)
    batch_id = cb.make_batch(db, "admin")
    ledger = open_embedded(db, tmp_path / "build")
    root = bytes.fromhex(db.scalar("SELECT root FROM chain_batches WHERE id = ?", [batch_id])[2:])
    sent = ledger.anchor(batch_id, root, 2, 1)  # the transaction went through but the studio never heard back
    assert cb.anchor_due(db, ledger) == [batch_id]
    row = db.query("SELECT tx_hash, block_number FROM chain_batches WHERE id = ?", [batch_id])[0]
    assert (row["tx_hash"], row["block_number"]) == (sent.tx_hash, sent.block_number)
    events = ledger.contract.events.BatchAnchored().get_logs(from_block=0)
    assert len(events) == 1
    # the contract itself ignores a repeated anchor (no second event) and refuses another root
    ledger.anchor(batch_id, root, 2, 1)
    assert len(ledger.contract.events.BatchAnchored().get_logs(from_block=0)) == 1
    with pytest.raises(ChainError, match="already anchored"):
        ledger.anchor(batch_id, b"\x01" * 32, 2, 1)


def test_batch_policy_by_count_and_age(labels):
    from datetime import datetime, timedelta, timezone

    db = labels.db
    cb.collect_contributions(db)
    assert cb.due_trigger(db, cb.BatchPolicy(batch_size=9, max_age_minutes=60)) == "count"
    assert cb.due_trigger(db, cb.BatchPolicy(batch_size=10, max_age_minutes=60)) is None
    later = datetime.now(timezone.utc) + timedelta(minutes=61)
    assert cb.due_trigger(db, cb.BatchPolicy(batch_size=10, max_age_minutes=60), now=later) == "age"
    cb.save_policy(db, cb.BatchPolicy(batch_size=3))
    assert cb.load_batch_policy(db).batch_size == 3


def test_operator_key_from_keystore_never_printed(tmp_path):
    import json

    from eth_account import Account

    from core.chain.ledger import load_operator

    account = Account.create()
    secret = account.key.hex()
    keystore = tmp_path / "operator.json"
    keystore.write_text(json.dumps(Account.encrypt(account.key, "pw-123")))
    operator = load_operator({"STUDIO_CHAIN_KEYSTORE": str(keystore), "STUDIO_CHAIN_KEYSTORE_PASSWORD": "pw-123"})
    assert operator.address == account.address
    assert secret not in repr(operator) + str(operator)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(operator)
    with pytest.raises(ChainError) as wrong:
        load_operator({"STUDIO_CHAIN_KEYSTORE": str(keystore), "STUDIO_CHAIN_KEYSTORE_PASSWORD": "nope"})
    assert "nope" not in str(wrong.value)
    with pytest.raises(ChainError) as bad:
        load_operator({"STUDIO_CHAIN_OPERATOR_KEY": "0x1234" + secret[6:-2]})
    assert secret[6:-2] not in str(bad.value) and bad.value.__cause__ is None and bad.value.__suppress_context__
    with pytest.raises(ChainError, match="No operator key"):
        load_operator({})


def test_public_reports_let_anyone_recheck_a_contribution(labels, tmp_path):
    import json

    from eth_utils import keccak

    from core.chain.merkle import ACCOUNT_LEAF, CONTRIBUTION_LEAF, leaf_hash, process_proof
    from core.chain.public import contributions_report, proof_report
    from core.errors import NotFound

    db = labels.db
    cb.collect_contributions(db)
    batch_id = cb.make_batch(db, "admin")
    ledger = open_embedded(db, tmp_path / "build")
    cb.anchor_due(db, ledger)
    report = json.loads(json.dumps(contributions_report(db, "bob")))  # JSON-ready
    assert report["address"] == labels.bob_key.address and len(report["contributions"]) == 4
    assert {c["status"] for c in report["contributions"]} == {"anchored"}
    cid = report["contributions"][0]["id"]
    full = json.loads(json.dumps(proof_report(db, "bob", cid, with_secret=True)))
    public = proof_report(db, "bob", cid)
    assert "salt" not in public and "content" not in public
    # recompute everything from the report alone, then compare with the root read from the chain
    p = full["proof"]
    assert "0x" + keccak(bytes.fromhex(full["salt"]) + full["content"].encode()).hex() == p["content_hash"]
    leaf = leaf_hash(CONTRIBUTION_LEAF, (cid, bytes.fromhex(p["content_hash"][2:]), int(p["amount"])))
    subroot = process_proof(leaf, [bytes.fromhex(x[2:]) for x in p["subproof"]])
    assert "0x" + subroot.hex() == p["subroot"]
    top = leaf_hash(ACCOUNT_LEAF, (p["account"], int(p["account_amount"]), subroot))
    assert process_proof(top, [bytes.fromhex(x[2:]) for x in p["proof"]]) == ledger.root_of(batch_id)
    with pytest.raises(NotFound):
        proof_report(db, "alice", cid)  # not alice's
    with pytest.raises(NotFound):
        contributions_report(db, "nobody")


def test_background_worker_collects_batches_by_count_and_anchors(labels, tmp_path, monkeypatch):
    import time

    from core.chain import service as service_module
    from core.chain.service import ChainService
    from core.config import load_settings

    monkeypatch.setattr(service_module, "TICK_SECONDS", 0.1)
    db = labels.db
    cb.save_policy(db, cb.BatchPolicy(batch_size=5, max_age_minutes=600))
    service = ChainService(load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}), db)
    service.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not db.scalar(
            "SELECT count(*) FROM chain_batches WHERE status = 'anchored'"
        ):
            time.sleep(0.2)
        batch = db.query("SELECT * FROM chain_batches")
        assert len(batch) == 1 and batch[0]["status"] == "anchored" and batch[0]["trigger"] == "count"
        assert service.ledger().root_of(batch[0]["id"]).hex() == batch[0]["root"][2:]
    finally:
        service.stop()
