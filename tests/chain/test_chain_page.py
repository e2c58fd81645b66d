"""The Wallet page in-process (Streamlit AppTest) on a real studio and the embedded chain:
link by pasted signature, batch, anchor, claim, verify."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account

from tests.support.chain import sign

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "wallet.py")


def _texts(app) -> str:
    return " ".join(
        str(e.value)
        for kind in ("success", "info", "error", "warning", "markdown", "caption")
        for e in getattr(app, kind)
    )


def test_wallet_page_link_batch_anchor_claim_verify(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.chain.service import service_for
    from core.config import load_settings

    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(
        load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}), tmp_path / "no-model"
    )
    me = studio.directory.user("")  # local mode: the page's user
    key = Account.create()
    try:
        app = AppTest.from_file(PAGE, default_timeout=60).run()
        assert not app.exception, app.exception
        assert any("No contributions yet" in i.value for i in app.info)
        app.text_input(key="link-address").input(key.address).run()
        app.button(key="link-issue").click().run()
        message = next(c.value for c in app.code if "wants you to sign in" in c.value)
        app.text_input(key="link-signature").input(sign(message, Account.create().key)).run()
        app.button(key="link-submit").click().run()
        assert "signature was made by" in _texts(app)  # somebody else's signature is refused
        app.text_input(key="link-signature").input(sign(message, key.key)).run()
        app.button(key="link-submit").click().run()
        assert not app.exception, app.exception
        assert f"Linked address: `{key.address}`" in _texts(app)

        with studio.db.transaction() as cur:
            for outcome in ("a", "b", "tie"):
                cur.execute("INSERT INTO preferences (outcome, labeler_id) VALUES (?, ?)", [outcome, me.id])
        app.button(key="cut").click().run()
        assert "Batch 1 queued." in _texts(app)
        app.button(key="anchor").click().run()
        assert "Anchored: [1]" in _texts(app), _texts(app)
        app.run()
        assert [m.value for m in app.metric][:4] == ["0.000", "0.000", "3.000", "0.000"]
        app.button(key="claim").click().run()
        assert "Batch 1 claimed in 0x" in _texts(app)
        app.run()
        metrics = [m.value for m in app.metric]
        assert metrics[3] == "3.000" and metrics[4] == "3.000"  # claimed, and the balance read from the chain
        app.button(key="verify").click().run()
        assert any(s.value.startswith("Verified: batch 1") for s in app.success), _texts(app)
    finally:
        worker = service_for(studio)
        studio.close()
    assert not worker.running  # closing the studio stopped the worker the page started

    # restart: a new studio on the same data dir rebuilds the embedded chain from the database
    studio = core.studio.open_studio(
        load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}), tmp_path / "no-model"
    )
    try:
        app = AppTest.from_file(PAGE, default_timeout=60).run()
        assert not app.exception, app.exception
        metrics = [m.value for m in app.metric]
        assert metrics[3] == "3.000" and metrics[4] == "3.000"  # claimed in the DB, balance on the rebuilt chain
        app.button(key="verify").click().run()
        assert any(s.value.startswith("Verified: batch 1") for s in app.success), _texts(app)
    finally:
        studio.close()
