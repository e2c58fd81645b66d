"""Newcomer polish (issue 28, parts 5 and 8): the Export page shows what it wrote and only the options that apply,
the Data page's donut has no "0" slices, tables leave missing values empty, the dry run's reasons are readable,
one parameter count everywhere, and judge-run times come from measured throughput."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.judging import runs as judging
from core.share.exports import human_size
from core.share.gguf_export import ollama_create_command, ollama_model_name
from core.training.estimate import base_parameter_count, estimate
from tests.support import ROOT
from tests.support.studios import make_random_adapter, open_studio

EXPORT_PAGE = str(ROOT / "pages" / "export.py")
OPTION_LABELS = ("Merged precision", "GGUF type", "bitsandbytes type")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A studio on the tiny model with twelve "A better" votes and v1, a random LoRA adapter on the base."""
    from core.serving.policies import register_policy

    data_dir = tmp_path_factory.mktemp("polish") / "data"
    s = open_studio(data_dir)
    register_policy(s.db, "v1", s.base_policy_id, "tiny", "dpo", str(make_random_adapter(data_dir, "v1")))
    yield s
    s.close()


# --- one parameter count --------------------------------------------------------------------------------------


def test_parameter_count_ignores_loaded_lora_adapters(tiny_model_dir):
    """The Train page said "135M-param" before the first job and "139M-param" after: the served model then
    carried v1's adapter. The count is the base model's, whatever adapters are loaded."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before = sum(p.numel() for p in model.parameters())
    model.add_adapter(LoraConfig(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), adapter_name="v1")
    assert sum(p.numel() for p in model.parameters()) > before  # what the page used to show
    assert base_parameter_count(model) == before


def test_dry_run_estimate_names_the_same_size_as_the_loaded_model(tmp_path):
    """SmolLM2-135M's shape (no weights: the meta device): the dry run's "~N M params" and the Train page's
    count agree, both 135M (134,515,008 weights, tied embeddings once)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from core.training.dpo import DPOConfig

    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    )
    config.save_pretrained(tmp_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert base_parameter_count(model) == 134_515_008
    assert "~135M params" in estimate(DPOConfig(max_steps=2), 10, tmp_path)["assumptions"]


# --- judge runs: measured, not assumed ------------------------------------------------------------------------


def pair(i: int, chars: int) -> judging.PairItem:
    return judging.PairItem(
        i, 1, None, 2 * i, 2 * i + 1, "a" * (chars // 2), "b" * (chars // 2), [{"role": "user", "content": "q"}]
    )


class CharsPerSecondJudge:
    """A judge whose time grows with the text it reads, like every real one (a forward pass over the prompt)."""

    batch = 8
    seconds_per_char = 2e-5

    def prefer_first(self, items):
        time.sleep(self.seconds_per_char * sum(len(a) + len(b) + len(p[0]["content"]) for p, a, b in items))
        return [0.5] * len(items)


def test_judge_estimate_scales_measured_throughput_to_every_pair(monkeypatch):
    """The first pair is a short test chat, the rest are long: timing the first pair alone (the old estimate) came
    out far low; a sample spread over the work, scaled by size, lands near the real time."""
    items = [pair(0, 20)] + [pair(i, 4000) for i in range(1, 12)]
    monkeypatch.setattr(judging, "work_items", lambda db, source, spec: items)
    monkeypatch.setattr(judging, "backend_for", lambda studio, spec, key=None: CharsPerSecondJudge())
    fake_studio = type("Studio", (), {"db": None})()
    cost = judging.estimate(fake_studio, "rm1", judging.UNLABELED)
    actual = 2 * CharsPerSecondJudge.seconds_per_char * sum(judging.pair_chars(i) for i in items)
    first_pair_only = 2 * CharsPerSecondJudge.seconds_per_char * judging.pair_chars(items[0]) * len(items)
    assert first_pair_only < 0.1 * actual  # what the old estimate would say
    assert cost["sample_pairs"] == judging.CALIBRATION_PAIRS
    assert 0.8 * actual <= cost["seconds"] <= 1.6 * actual, (cost, actual)


def test_projection_and_sample_helpers():
    assert judging.projected_seconds(2.0, [100, 100], [100, 300, 600]) == pytest.approx(10.0)
    assert judging.projected_seconds(2.0, [0, 0], [0, 0, 0, 0]) == pytest.approx(4.0)  # no text: per pair
    assert judging.projected_seconds(1.0, [10], []) == 0.0
    assert judging.calibration_sample(list(range(8)), 4) == [1, 3, 5, 7]
    assert judging.calibration_sample(list(range(9)), 1) == [4]
    assert judging.calibration_sample([7], 4) == [7]


def test_run_eta_follows_the_pace_so_far():
    now = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
    started = (now - timedelta(seconds=30)).isoformat()
    running = {"status": "running", "done": 3, "total": 12, "started_at": started}
    assert judging.run_eta(running, now) == pytest.approx(90.0)  # 3 pairs in 30 s: 9 left, 90 s
    assert judging.run_eta({**running, "done": 0}, now) is None  # nothing measured yet
    assert judging.run_eta({**running, "status": "succeeded"}, now) is None
    assert judging.remaining_seconds(12, 12, 50.0) == 0.0


# --- the Export page ------------------------------------------------------------------------------------------


def option_boxes(app) -> set[str]:
    return {s.label for s in app.selectbox} & set(OPTION_LABELS)


def test_export_page_shows_only_the_chosen_kinds_options_and_no_bitsandbytes_without_cuda(studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio

    monkeypatch.setattr(core.studio, "_current", studio)
    monkeypatch.setattr(studio, "hardware", dataclasses.replace(studio.hardware, cuda_available=False))
    app = AppTest.from_file(EXPORT_PAGE, default_timeout=60).run()
    assert not app.exception
    kind = next(r for r in app.radio if r.label == "Export")
    assert not any("bitsandbytes" in o for o in kind.options)
    assert any("needs a CUDA GPU" in c.value or "CUDA GPU" in c.value for c in app.caption)
    assert option_boxes(app) == set()  # the adapter has no such option
    kind.set_value("merged").run()
    assert option_boxes(app) == {"Merged precision"}
    next(r for r in app.radio if r.label == "Export").set_value("gguf").run()
    assert option_boxes(app) == {"GGUF type"}

    monkeypatch.setattr(studio, "hardware", dataclasses.replace(studio.hardware, cuda_available=True))
    app = AppTest.from_file(EXPORT_PAGE, default_timeout=60).run()
    kind = next(r for r in app.radio if r.label == "Export")
    assert any("bitsandbytes" in o for o in kind.options)
    kind.set_value("quantized").run()
    assert option_boxes(app) == {"bitsandbytes type"}


def test_export_page_lists_the_files_a_gguf_export_wrote_with_its_modelfile_and_ollama_command(studio, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.studio

    monkeypatch.setattr(core.studio, "_current", studio)
    app = AppTest.from_file(EXPORT_PAGE, default_timeout=60).run()
    next(r for r in app.radio if r.label == "Export").set_value("gguf").run()
    next(b for b in app.button if b.label == "Export").click().run()
    assert not app.exception and any("written to" in s.value for s in app.success), [e.value for e in app.error]
    folder = Path(studio.db.query("SELECT path FROM exports ORDER BY id DESC LIMIT 1")[0]["path"])

    listed = [d.value for d in app.dataframe if "file" in d.value.columns]
    files = listed[0]
    assert {"v1-q8_0.gguf", "Modelfile", "README.md"} <= set(files["file"])
    gguf_size = human_size((folder / "v1-q8_0.gguf").stat().st_size)
    assert files.loc[files["file"] == "v1-q8_0.gguf", "size"].item() == gguf_size
    code = [c.value for c in app.code]
    assert any(c.startswith(f"ollama create v1-q8_0 -f {folder / 'Modelfile'}") for c in code), code
    assert (folder / "Modelfile").read_text().strip() in [c.strip() for c in code]  # its text, as written


def test_ollama_command_and_sizes():
    assert ollama_model_name("V1 final", "q4_0") == "v1-final-q4_0"
    assert (
        ollama_create_command("/data/exports/0001 v1/Modelfile", "v1-q8_0")
        == "ollama create v1-q8_0 -f '/data/exports/0001 v1/Modelfile'"
    )
    assert [human_size(n) for n in (512, 1_500, 2_345_678, 3_000_000_000)] == ["512 B", "1.5 kB", "2.3 MB", "3.0 GB"]


def test_export_tables_leave_missing_values_empty(studio, monkeypatch):
    """The exports table's never-pushed rows (no repo, no commit) printed "None"."""
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.labeling.identity import ensure_user
    from core.share.exports import export_adapter

    # its own never-pushed export, so the test holds alone or after the GGUF one above
    export_adapter(studio.db, studio.settings.data_dir, "v1", ensure_user(studio.db, "ada", "admin", "test"))
    monkeypatch.setattr(core.studio, "_current", studio)
    app = AppTest.from_file(EXPORT_PAGE, default_timeout=60).run()
    assert app.dataframe and all(d.proto.HasField("placeholder") and d.proto.placeholder == "" for d in app.dataframe)


# --- the Data page's donut and tables -------------------------------------------------------------------------


def plotly_array(value) -> list:
    """A trace's array from plotly's JSON: a plain list, or a typed array (``{"dtype", "bdata"}``, base64)."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def test_data_page_donut_has_no_zero_slices_and_tables_no_none(studio, monkeypatch):
    """Every seeded vote is for A: the other three slices printed "0" labels on the ring."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.labeling.votes import OUTCOME_LABELS

    monkeypatch.setattr(core.studio, "_current", studio)
    st.cache_data.clear()
    app = AppTest.from_file(str(ROOT / "pages" / "data.py"), default_timeout=60).run()
    assert not app.exception
    pies = [
        trace
        for chart in app.get("plotly_chart")
        for trace in json.loads(chart.proto.spec)["data"]
        if trace.get("type") == "pie"
    ]
    assert len(pies) == 1
    assert list(pies[0]["labels"]) == [OUTCOME_LABELS["a"]] and 0 not in plotly_array(pies[0]["values"]), pies[0]
    assert app.dataframe and all(d.proto.HasField("placeholder") and d.proto.placeholder == "" for d in app.dataframe)


# --- the Train page's dry run ---------------------------------------------------------------------------------


def test_dry_run_settings_are_a_wrapping_table_with_empty_missing_values(studio, monkeypatch):
    """The reason column of the dry run's settings was cut off in a data grid: a static table wraps each sentence."""
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.training.request import DryRun

    reason = (
        "64 pairs make 8 step(s) per epoch: 5 epoch(s) -> 40 steps (small set: repeated to reach at least "
        "40 optimizer steps)"
    )
    report = DryRun(
        "dpo",
        64,
        8,
        {},
        {"pairs": 64},
        {"steps": 40, "seconds": 60},
        True,
        "",
        settings=[
            {"name": "num_train_epochs", "value": 5.0, "source": "auto", "reason": reason},
            {"name": "max_steps", "value": None, "source": "default", "reason": "epochs decide"},
        ],
    )
    monkeypatch.setattr(core.studio, "_current", studio)
    app = AppTest.from_file(str(ROOT / "pages" / "train.py"), default_timeout=60)
    app.session_state["dry-run"] = ("dpo", report)
    app.run()
    assert not app.exception, app.exception
    settings = next(t.value for t in app.table if "chosen by" in t.value.columns)
    assert reason in settings["reason"].tolist()
    assert settings.loc[settings["name"] == "max_steps", "value"].item() == ""
    assert settings.loc[settings["name"] == "num_train_epochs", "value"].item() == "5"


def test_an_unchanged_figure_shows_no_delta_arrow():
    """Streamlit draws any delta text as up or down: an unchanged accuracy read a green "↑ 0.00", an unchanged
    refusal rate a red "↑ 0%"."""
    from pages.common import metric_delta

    assert metric_delta(0.5, 0.5) is None
    assert metric_delta(0.2, 0.2001, "{:.0%}") is None  # rounds to 0% at the figure's precision
    assert metric_delta(40.2, 40.0, "{:.0f}") is None
    assert metric_delta(0.5, None) is None
    assert metric_delta(0.5, 0.25) == "0.25" and metric_delta(0.1, 0.3, "{:.0%}") == "-20%"
