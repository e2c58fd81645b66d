"""Dataset import: small files in every supported shape -> real DuckDB -> the training-set builders."""
from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.data import datasets_io
from core.data.datasets_io import import_file
from core.data.filters import Filters
from core.data.import_files import ImportFileError
from core.data.import_formats import inspect_file
from core.data.trainsets import build_preference, build_sft, build_unpaired, preference_rows, unpaired_rows
from core.errors import PermissionDenied, ValidationError
from core.labeling.identity import User
from core.labeling.queue import next_prompt
from storage.db import Database

ROOT = Path(__file__).resolve().parents[2]
ADMIN = User(0, "admin", "admin")


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def pair(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {"prompt": prompt, "chosen": [bot(chosen)], "rejected": [bot(rejected)]}


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def counts(db: Database) -> dict[str, int]:
    return {t: db.scalar(f"SELECT count(*) FROM {t}")
            for t in ("conversations", "messages", "candidates", "preferences", "thumbs", "prompts")}


# ----------------------------------------------------------------------------------------- shapes

def test_standard_preference_jsonl_becomes_votes_the_builders_return(db: Database, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
                                            {"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    assert inspect_file(path).summary() == {"format": "preference", "rows": 2, "pairs": 2, "errors": []}
    result = import_file(db, path, user=ADMIN)
    assert (result.source, result.pairs, result.skipped_rows) == ("import:prefs", 2, [])
    assert build_preference(db).dataset.to_list() == [pair([user("Hi")], "Hello!", "Go away."),
                                                      pair([user("2+2?")], "4", "5")]
    # the source name is kept and filters on it; SFT takes the chosen answers
    assert {r["source"] for r in db.query("SELECT source FROM preferences")} == {"import:prefs"}
    assert preference_rows(db, Filters(sources=("import:prefs",))).stats["rows"] == 2
    assert preference_rows(db, Filters(sources=("import:*",))).stats["rows"] == 2
    assert preference_rows(db, Filters(sources=("chat",))).stats["rows"] == 0
    assert build_sft(db).dataset.to_list()[1] == {"messages": [user("2+2?"), bot("4")]}
    assert db.query("SELECT action, target_table FROM audit_log") == [{"action": "import",
                                                                        "target_table": "preferences"}]


def test_conversational_preference_keeps_system_and_multi_turn_prompts(db: Database, tmp_path: Path) -> None:
    history = [{"role": "system", "content": "Be brief."}, user("Capital of France?"), bot("Paris."),
               user("And of Italy?")]
    rows = [pair(history, "Rome.", "Milan."),
            # implicit prompt: chosen and rejected are whole conversations sharing their prefix
            {"chosen": [user("Name a colour"), bot("Blue")], "rejected": [user("Name a colour"), bot("Seven")]}]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert inspect_file(path).format == "preference_conversational"
    import_file(db, path, name="conv")
    assert preference_rows(db).rows == [pair(history, "Rome.", "Milan."),
                                        pair([user("Name a colour")], "Blue", "Seven")]


def test_kto_csv_labels_become_thumbs_for_the_unpaired_builder(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "kto.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion", "label"])
        writer.writerows([["Hi", "Hello!", "true"], ["Hi", "Whatever.", "False"], ["Sum 1+1", "2", "1"],
                          ["Joke?", "No.", "maybe"]])
    parsed = inspect_file(path)
    assert parsed.summary() == {"format": "kto", "rows": 4, "pairs": 3,
                                "errors": [{"row": 4, "error": "label 'maybe' is not true/false"}]}
    result = import_file(db, path, skip_bad=True)
    assert (result.labeled, result.skipped_rows) == (3, [4])
    assert build_unpaired(db).dataset.to_list() == [
        {"prompt": [user("Hi")], "completion": [bot("Hello!")], "label": True},
        {"prompt": [user("Hi")], "completion": [bot("Whatever.")], "label": False},
        {"prompt": [user("Sum 1+1")], "completion": [bot("2")], "label": True}]
    assert db.scalar("SELECT count(DISTINCT source) FROM conversations WHERE source = 'import:kto'") == 1
    assert preference_rows(db).rows == []
    # the source filter picks imported KTO answers out (they have no vote to carry the source)
    assert len(build_unpaired(db, Filters(sources=("import:kto",))).dataset) == 3
    assert len(build_unpaired(db, Filters(sources=("chat",))).dataset) == 0


def test_conversational_kto_jsonl(db: Database, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "kto_conv.jsonl", [
        {"prompt": [user("Hi"), bot("Hello"), user("Bye")], "completion": [bot("See you")], "label": True}])
    assert inspect_file(path).format == "kto_conversational"
    import_file(db, path)
    assert unpaired_rows(db).rows == [{"prompt": [user("Hi"), bot("Hello"), user("Bye")],
                                       "completion": [bot("See you")], "label": True}]


def test_hh_transcripts_split_into_shared_multi_turn_prompt(db: Database, tmp_path: Path) -> None:
    shared = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And times 3?"
    plain = jsonl(tmp_path / "hh.jsonl", [
        {"chosen": shared + "\n\nAssistant: 12.", "rejected": shared + "\n\nAssistant: 7."},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hey\n\nAssistant: Hello!"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello"}])
    path = tmp_path / "hh.jsonl.gz"                   # gzipped, as Anthropic ships train.jsonl.gz
    path.write_bytes(gzip.compress(plain.read_bytes()))
    parsed = inspect_file(path)
    assert parsed.format == "hh" and parsed.pairs == 1
    assert [e["row"] for e in parsed.errors] == [2, 3]
    assert "differ before the final answer" in parsed.errors[0]["error"]
    assert "empty final answer" in parsed.errors[1]["error"]
    with pytest.raises(ValidationError, match="2 bad row"):
        import_file(db, path)
    assert import_file(db, path, skip_bad=True).source == "import:hh"
    assert preference_rows(db).rows == [
        pair([user("What is 2+2?"), bot("4."), user("And times 3?")], "12.", "7.")]


def test_ultrafeedback_parquet_with_scores(db: Database, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def row(prompt: str, good: str, bad: str, sc: float, sr: float) -> dict:
        return {"prompt": prompt, "chosen": [user(prompt), bot(good)], "rejected": [user(prompt), bot(bad)],
                "messages": [user(prompt), bot(good)], "score_chosen": sc, "score_rejected": sr}

    path = tmp_path / "uf.parquet"
    pq.write_table(pa.Table.from_pylist([row("Why is the sky blue?", "Rayleigh scattering.", "Paint.", 9.0, 2.0),
                                         row("Tie?", "x", "y", 5.0, 5.0)]), path)
    parsed = inspect_file(path)
    assert parsed.summary() == {"format": "ultrafeedback", "rows": 2, "pairs": 1,
                                "errors": [{"row": 2, "error": "a tie (both scored 5) is not a preference"}]}
    import_file(db, path, skip_bad=True)
    assert preference_rows(db).rows == [pair([user("Why is the sky blue?")], "Rayleigh scattering.", "Paint.")]


def _oasst_tree() -> dict:
    def msg(mid: str, role: str, text: str, rank=None, replies=()):
        return {"message_id": mid, "role": role, "text": text, "rank": rank, "replies": list(replies)}

    follow_up = msg("p2", "prompter", "Why?", replies=[msg("a4", "assistant", "Mass.", 1),
                                                         msg("a5", "assistant", "Gravity.", 0)])
    root = msg("p1", "prompter", "Does the Moon fall?", replies=[
        msg("a1", "assistant", "Yes, always.", 0, [follow_up]), msg("a2", "assistant", "No.", 2),
        msg("a3", "assistant", "Sort of.", 1), msg("a6", "assistant", "unranked", None)])
    return {"message_tree_id": "p1", "prompt": root}


def _expected_oasst_pairs() -> list[dict]:
    q = [user("Does the Moon fall?")]
    deeper = q + [bot("Yes, always."), user("Why?")]
    return [pair(q, "Yes, always.", "Sort of."), pair(q, "Yes, always.", "No."), pair(q, "Sort of.", "No."),
            pair(deeper, "Gravity.", "Mass.")]


def test_oasst_tree_ranked_siblings_become_all_pairs(db: Database, tmp_path: Path) -> None:
    bad_rank = {"prompt": {"role": "prompter", "text": "Q", "replies": [
        {"role": "assistant", "text": "A", "rank": "best"}, {"role": "assistant", "text": "B", "rank": 1}]}}
    path = jsonl(tmp_path / "oasst_trees.jsonl", [_oasst_tree(), {"prompt": {"role": "prompter"}}, bad_rank])
    parsed = inspect_file(path)
    assert (parsed.format, parsed.pairs) == ("oasst_tree", 4)
    assert parsed.errors == [{"row": 2, "error": "no message tree (expected a 'prompt' message with 'replies')"},
                             {"row": 3, "error": "rank 'best' is not a number"}]
    import_file(db, path, skip_bad=True)
    assert preference_rows(db).rows == _expected_oasst_pairs()


def test_oasst_flat_rows_are_rebuilt_from_parent_links(db: Database, tmp_path: Path) -> None:
    flat = []

    def flatten(node: dict, parent: str | None) -> None:
        flat.append({"message_id": node["message_id"], "parent_id": parent, "role": node["role"],
                     "text": node["text"], "rank": node["rank"], "lang": "en", "deleted": False})
        for reply in node["replies"]:
            flatten(reply, node["message_id"])

    flatten(_oasst_tree()["prompt"], None)
    flat.append({"message_id": "x1", "parent_id": "p1", "role": "wizard", "text": "?", "rank": 3})
    path = jsonl(tmp_path / "oasst1.jsonl", flat)
    parsed = inspect_file(path)
    assert (parsed.format, parsed.pairs) == ("oasst_flat", 4)
    assert parsed.errors == [{"row": len(flat), "error": "unknown role 'wizard' (expected prompter or assistant)"}]
    import_file(db, path, skip_bad=True)
    assert sorted(map(json.dumps, preference_rows(db).rows)) == sorted(map(json.dumps, _expected_oasst_pairs()))


def test_saved_dataset_folder_and_its_zip(db: Database, tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"prompt": "Hi", "chosen": "Hello!", "rejected": "No."}]).save_to_disk(str(folder))
    assert inspect_file(folder).summary() == {"format": "preference", "rows": 1, "pairs": 1, "errors": []}
    archive = tmp_path / "saved.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in folder.rglob("*"):
            zf.write(file, Path("saved") / file.relative_to(folder))
    import_file(db, archive, name="zipped")
    assert preference_rows(db, Filters(sources=("import:zipped",))).rows == [pair([user("Hi")], "Hello!", "No.")]


def test_prompt_list_fills_a_labeling_queue(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "questions.txt"
    path.write_text("What is DPO?\n\nExplain KL divergence.\nWhat is DPO?\n", encoding="utf-8")
    parsed = inspect_file(path)
    assert parsed.summary() == {"format": "prompts", "rows": 3, "pairs": 0, "errors": []}
    result = import_file(db, path, queue="imported")
    assert (result.prompts, result.duplicates) == (2, 1)
    assert db.query("SELECT text, source FROM prompts ORDER BY id") == [
        {"text": "What is DPO?", "source": "import:questions"},
        {"text": "Explain KL divergence.", "source": "import:questions"}]
    queue_id = db.scalar("SELECT id FROM queues WHERE name = 'imported'")
    labeler = User(db.scalar("INSERT INTO users (name) VALUES ('ada') RETURNING id"), "ada", "labeler")
    assert next_prompt(db, labeler, queue_id)["text"] == "What is DPO?"
    # a prompt column works too; pairs cannot go into a queue
    assert inspect_file(jsonl(tmp_path / "p.jsonl", [{"prompt": "One"}, {"text": "Two"}])).prompts == [
        (1, "One"), (2, "Two")]
    with pytest.raises(ValidationError, match="Only prompt lists"):
        import_file(db, jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}]), queue="q")


# ----------------------------------------------------------------------------------------- failures

def test_bad_rows_abort_the_whole_import_unless_skipped(db: Database, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "Good", "chosen": "yes", "rejected": "no"},
        "{not json",
        {"prompt": "No rejected", "chosen": "yes"},
        {"prompt": "Same", "chosen": "x", "rejected": "x"},
        {"prompt": [bot("starts with the bot")], "chosen": "a", "rejected": "b"},
        {"prompt": "Good too", "chosen": "fine", "rejected": "bad"}])
    parsed = inspect_file(path)
    assert [(e["row"], e["error"]) for e in parsed.errors] == [
        (2, "not JSON: Expecting property name enclosed in double quotes (column 2)"),
        (3, "rejected is missing"),
        (4, "chosen and rejected are identical"),
        (5, "prompt must end with a user message, it ends with assistant")]
    before = counts(db)
    with pytest.raises(ValidationError) as refused:
        import_file(db, path)
    assert "4 bad row(s), nothing imported; first: row 2" in refused.value.message
    assert counts(db) == before
    result = import_file(db, path, skip_bad=True)
    assert (result.pairs, result.skipped_rows) == (2, [2, 3, 4, 5])
    assert [r["prompt"] for r in preference_rows(db).rows] == [[user("Good")], [user("Good too")]]


def test_a_failure_while_writing_leaves_nothing_behind(db: Database, tmp_path: Path, monkeypatch) -> None:
    path = jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    real_insert = datasets_io.bulk_insert

    def failing_insert(cur, table, columns):
        if table == "preferences":
            raise RuntimeError("disk full")
        real_insert(cur, table, columns)

    monkeypatch.setattr(datasets_io, "bulk_insert", failing_insert)
    with pytest.raises(RuntimeError, match="disk full"):
        import_file(db, path)
    assert set(counts(db).values()) == {0}
    assert db.scalar("SELECT count(*) FROM audit_log") == 0


def test_importing_the_same_pairs_twice_does_not_duplicate_them(db: Database, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}] * 2)
    assert import_file(db, path).pairs == 1           # a repeat inside the file counts once
    again = import_file(db, path)
    assert (again.pairs, again.duplicates) == (0, 2)
    assert import_file(db, path, name="other").pairs == 1   # another source name is another dataset
    assert db.scalar("SELECT count(*) FROM preferences") == 2


@pytest.mark.parametrize("name, content, message", [
    ("latin1.jsonl", '{"prompt": "café", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"),
     "not UTF-8: byte 0xe9 on line 1"),
    ("utf16.jsonl", '{"prompt": "hi", "chosen": "a", "rejected": "b"}\n'.encode("utf-16"), "UTF-16"),
    ("garbage.csv", bytes(range(256)) * 4, "not a text file"),
    ("fake.parquet", b"this is not parquet", "not a parquet file"),
    ("broken.parquet", b"PAR1 truncated", "not a readable parquet file"),
    ("broken.zip", b"PK\x03\x04 broken", "not a valid zip file"),
    ("data.xyz", b"hello", "Cannot tell what kind of file"),
    ("broken.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "broken gzip file"),
    ("bad.json", b'[{"prompt": "x",', "not valid JSON"),
    ("shape.jsonl", b'{"foo": 1, "bar": 2}\n', "Unknown dataset shape; columns found: bar, foo"),
    ("empty.jsonl", b"\n\n", "no readable records"),
])
def test_unreadable_files_are_clear_errors(db: Database, tmp_path: Path, name: str, content: bytes,
                                           message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImportFileError) as raised:
        import_file(db, path)
    assert message in raised.value.message and raised.value.hint
    assert set(counts(db).values()) == {0}


def test_utf8_bom_and_excel_style_csv_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("prompt;chosen;rejected\r\nCafé?;Oui;Non\r\n".encode("utf-8-sig"))
    parsed = inspect_file(path)
    assert parsed.items[0].prompt == [user("Café?")] and parsed.items[0].answers == ["Oui", "Non"]


def test_only_admins_import_and_names_are_checked(db: Database, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "chosen": "a", "rejected": "b"}])
    with pytest.raises(PermissionDenied):
        import_file(db, path, user=User(5, "bo", "labeler"))
    with pytest.raises(ValidationError, match="not usable"):
        import_file(db, path, name="bad name!")


# ----------------------------------------------------------------------------------------- CLI

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), "import", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow   # >= 3 s (a server, a child process or a CLI run): not in make test-fast
def test_cli_dry_run_json_then_import_and_refusal_while_the_database_is_busy(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = jsonl(tmp_path / "hh-small.jsonl", [
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Bye."},
        {"chosen": "no markers", "rejected": "\n\nHuman: Hi\n\nAssistant: x"}])
    dry = run_cli(str(path), "--dry-run", "--json", "--data-dir", str(data_dir))
    assert dry.returncode == 3, dry.stderr
    assert json.loads(dry.stdout) == {"format": "hh", "rows": 2, "pairs": 1, "errors": [
        {"row": 2, "error": "chosen does not start with 'Human:'"}]}
    assert not data_dir.exists()                       # a dry run writes nothing, not even the database

    refused = run_cli(str(path), "--data-dir", str(data_dir))
    assert refused.returncode == 2 and "1 bad row(s), nothing imported" in refused.stderr

    done = run_cli(str(path), "--skip-bad", "--name", "hh", "--json", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pairs"] == 1 and json.loads(done.stdout)["skipped_rows"] == [2]

    db = Database.in_data_dir(data_dir)               # now this process holds the single DuckDB writer slot
    try:
        assert preference_rows(db, Filters(sources=("import:hh",))).rows == [pair([user("Hi")], "Hello!", "Bye.")]
        busy = run_cli(str(path), "--skip-bad", "--data-dir", str(data_dir))
        assert busy.returncode == 2
        assert "Cannot open the database" in busy.stderr and "stop the running studio" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        db.close()


# ----------------------------------------------------------------------------------------- Data page

def test_data_page_import_detects_then_imports_only_after_confirmation(tmp_path: Path, monkeypatch) -> None:
    """The real Data page in Streamlit's AppTest: upload -> summary -> refused with bad rows -> skip -> done."""
    import streamlit as st

    import core.studio
    from core.config import load_settings
    from tests.support.studios import data_page

    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}),
                                     tmp_path / "no-model")
    content = "".join(json.dumps(r) + "\n" for r in [{"prompt": "Hi", "chosen": "Hello!", "rejected": "No."},
                                                     {"prompt": "Bye", "chosen": "Ciao", "rejected": "Ciao"},
                                                     {"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    try:
        st.cache_data.clear()
        app = data_page("Import")
        assert not app.exception
        app.file_uploader(key="import_file").set_value(("team votes.jsonl", content.encode(), "application/jsonl"))
        app.run()
        assert not app.exception
        assert any(w.value == "detected: preference, 3 rows, 2 pairs, 1 errors" for w in app.warning)
        assert app.text_input(key="import_name").value == "team-votes"
        assert studio.db.scalar("SELECT count(*) FROM preferences") == 0      # detection writes nothing

        submit = next(b for b in app.button if b.label == "Import")
        submit.click().run()
        assert any("1 bad row(s), nothing imported" in e.value for e in app.error)
        assert studio.db.scalar("SELECT count(*) FROM preferences") == 0

        app.checkbox(key="import_skip_bad").check()
        next(b for b in app.button if b.label == "Import").click().run()
        assert not app.exception
        assert any("as `import:team-votes`: 2 pairs" in s.value for s in app.success)
        assert [r["prompt"] for r in preference_rows(studio.db, Filters(sources=("import:team-votes",))).rows] \
            == [[user("Hi")], [user("2+2?")]]
    finally:
        studio.close()


def test_data_page_imports_a_save_to_disk_folder(tmp_path: Path, monkeypatch) -> None:
    """Folder upload (the browser sends each file with its relative path)."""
    import datasets
    import streamlit as st

    import core.studio
    from core.config import load_settings
    from tests.support.studios import data_page

    folder = tmp_path / "kto_saved"
    datasets.Dataset.from_list([{"prompt": "Hi", "completion": "Hello!", "label": True},
                                {"prompt": "Hi", "completion": "Meh.", "label": False}]).save_to_disk(str(folder))
    files = [(f"kto_saved/{f.relative_to(folder).as_posix()}", f.read_bytes(), "application/octet-stream")
             for f in sorted(folder.rglob("*")) if f.is_file()]
    monkeypatch.setattr(core.studio, "_current", None)
    studio = core.studio.open_studio(load_settings({"data_dir": str(tmp_path / "data"), "model": "tiny"}, env={}),
                                     tmp_path / "no-model")
    try:
        st.cache_data.clear()
        app = data_page("Import")
        app.radio(key="import_kind").set_value("a folder saved with save_to_disk").run()
        app.file_uploader(key="import_folder").set_value(files)
        app.run()
        assert not app.exception
        assert any(i.value == "detected: kto, 2 rows, 2 pairs, 0 errors" for i in app.info)
        assert app.text_input(key="import_name").value == "kto_saved"
        next(b for b in app.button if b.label == "Import").click().run()
        assert any("2 labeled answers" in s.value for s in app.success)
        assert [r["label"] for r in unpaired_rows(studio.db).rows] == [True, False]
    finally:
        studio.close()


def test_an_imported_conversation_can_be_redacted_like_a_chat(db: Database, tmp_path: Path) -> None:
    from core.labeling.moderation import redact_item

    import_file(db, jsonl(tmp_path / "p.jsonl", [{"prompt": "My phone is 555-0100", "chosen": "ok", "rejected": "no"},
                                                 {"prompt": "Hi", "chosen": "Hello!", "rejected": "No."}]))
    admin = db.scalar("INSERT INTO users (name, role) VALUES ('root', 'admin') RETURNING id")
    leaked = db.scalar("SELECT conversation_id FROM messages WHERE content LIKE 'My phone%'")
    redact_item(db, admin, "conversation", leaked, "phone number")
    assert preference_rows(db).rows == [pair([user("Hi")], "Hello!", "No.")]
