"""What the Runs page (and the job's REST record) shows of a running job: its log without tqdm's redraws and
escape codes, and its progress during a held-out evaluation, which used to freeze the step counter and the ETA."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from core.training import rundir
from core.training.callbacks import ProgressCallback, evaluations_left

# Lines as a DPO job with a held-out split writes them into log.txt (captured from a real job, dicts shortened): tqdm
# redraws each bar in place with \r, the evaluation's bar is nested in the training bar (ESC[A moves back up), the
# Trainer prints its metrics over the bars, and after each evaluation tqdm redraws bars it already finished.
CAPTURED = [
    "\rGenerating train split: 0 examples [00:00, ? examples/s]\rGenerating train split: 62 examples [00:00, "
    "3922.81 examples/s]",
    "\rGenerating train split: 0 examples [00:00, ? examples/s]\rGenerating train split: 18 examples [00:00, "
    "7349.83 examples/s]",
    "\rTokenizing train dataset:   0%|          | 0/62 [00:00<?, ? examples/s]\rTokenizing train dataset:   6%|▋"
    "         | 4/62 [00:00<00:02, 28.24 examples/s]\rTokenizing train dataset: 100%|██████████| 62/62 [00:00<00:00, "
    "133.22 examples/s]\rTokenizing train dataset: 100%|██████████| 62/62 [00:00<00:00, 112.00 examples/s]",
    "[studio] trainable parameters: 32,768 of 3,219,776",
    "\r  0%|          | 0/3 [00:00<?, ?it/s]",
    "\r  0%|          | 0/4 [00:00<?, ?it/s]\x1b[A",
    "\r 50%|█████     | 2/4 [00:01<00:01,  1.87it/s]\x1b[A",
    "\r 75%|███████▌  | 3/4 [00:02<00:01,  1.06it/s]\x1b[A",
    "\r100%|██████████| 4/4 [00:03<00:00,  1.08it/s]\x1b[A\r                                     \r",
    "\r                                             \r\x1b[A{'eval_loss': '0.6931'}",
    "\r  0%|          | 0/3 [00:16<?, ?it/s]",
    "\r100%|██████████| 4/4 [00:03<00:00,  1.08it/s]\x1b[A",
    "\r                                             \x1b[A\r 33%|███▎      | 1/3 [00:22<00:44, 22.18s/it]\r"
    "                                             \r{'loss': '0.6931'}",
    "\r 33%|███▎      | 1/3 [00:22<00:44, 22.18s/it]{'loss': '0.6812'}",
    "\r 67%|██████▋   | 2/3 [00:25<00:11, 11.16s/it]\r"
    "                                             \r\r 67%|██████▋   | "
    "2/3 [00:25<00:11, 11.16s/it]",
    "\r  0%|          | 0/4 [00:00<?, ?it/s]\x1b[A",
    "\r 75%|███████▌  | 3/4 [00:02<00:01,  1.40it/s]\x1b[A",
    "\r100%|██████████| 4/4 [00:03<00:00,  1.11it/s]\x1b[A\r                                             \r",
    "\r                                             \r\x1b[A{'eval_loss': '0.6274'}",
    "\r100%|██████████| 4/4 [00:03<00:00,  1.11it/s]\x1b[A",
    "\r                                             \x1b[A/venv/transformers/modeling_utils.py:3303: FutureWarning: "
    "`is_gradient_checkpointing` is deprecated",
    "  warnings.warn(",
    "\r100%|██████████| 3/3 [00:35<00:00, 11.57s/it]\r                                             \r{'train_runtime': "
    "'37.96'}",
    "\x1b[31mERROR\x1b[0m: a coloured line keeps its text",
    "[studio] job finished: succeeded",
    "",
]

CLEAN = [
    "Generating train split: 62 examples [00:00, 3922.81 examples/s]",
    "Generating train split: 18 examples [00:00, 7349.83 examples/s]",
    "Tokenizing train dataset: 100%|██████████| 62/62 [00:00<00:00, 112.00 examples/s]",
    "[studio] trainable parameters: 32,768 of 3,219,776",
    "  0%|          | 0/3 [00:00<?, ?it/s]",
    "100%|██████████| 4/4 [00:03<00:00,  1.08it/s]",
    "{'eval_loss': '0.6931'}",
    "{'loss': '0.6931'}",  # printed over the bar, which was cleared for it
    " 33%|███▎      | 1/3 [00:22<00:44, 22.18s/it]",  # redrawn with the next record glued to it
    "{'loss': '0.6812'}",
    " 67%|██████▋   | 2/3 [00:25<00:11, 11.16s/it]",
    "100%|██████████| 4/4 [00:03<00:00,  1.11it/s]",
    "{'eval_loss': '0.6274'}",
    "/venv/transformers/modeling_utils.py:3303: FutureWarning: `is_gradient_checkpointing` is deprecated",
    "  warnings.warn(",
    "{'train_runtime': '37.96'}",  # the last state of its line
    "ERROR: a coloured line keeps its text",
    "[studio] job finished: succeeded",
]


def test_the_log_tail_keeps_each_bars_last_state_without_escape_codes_or_repeats(tmp_path):
    rundir.log_path(tmp_path).write_bytes("\n".join(CAPTURED).encode())
    assert rundir.clean_log("\n".join(CAPTURED)) == CLEAN
    assert rundir.log_tail(tmp_path, 40) == "\n".join(CLEAN)
    assert rundir.log_tail(tmp_path, 3).splitlines() == CLEAN[-3:]


def test_the_log_tail_of_a_long_log_reads_only_its_end_and_drops_what_the_window_cut(tmp_path):
    steps = "".join(
        f"\r{i * 100 // 3000:3d}%|#         | {i}/3000 [00:{i % 60:02d}<00:10,  9.5it/s]" for i in range(3000)
    )  # one line of ~150 kB: a long job's bar, redrawn in place
    lines = [f"[studio] line {i}" for i in range(2000)] + [steps, "[studio] after the bar"]
    rundir.log_path(tmp_path).write_text("\n".join(lines))
    tail = rundir.log_tail(tmp_path, 5).splitlines()
    assert tail == [" 99%|#         | 2999/3000 [00:59<00:10,  9.5it/s]", "[studio] after the bar"]
    assert rundir.log_tail(tmp_path / "missing", 5) == ""


def test_evaluations_left_counts_the_trainers_schedule():
    # every 2 steps of 6: at steps 2, 4, 6; the one due at a step end has not run yet
    assert [evaluations_left(s, 6, 2, include_step=True) for s in range(1, 7)] == [3, 3, 2, 2, 1, 1]
    assert evaluations_left(2, 6, 2, include_step=False) == 2
    assert evaluations_left(4, 5, 2, include_step=False) == 1  # and one more at the last step (5)
    assert evaluations_left(3, 6, 0, include_step=True) == 0  # no held-out split


def test_progress_shows_the_evaluation_and_its_time_counts_in_the_eta(tmp_path):
    """The callback driven as the Trainer drives it (real TrainingArguments, TrainerState, TrainerControl and
    DataLoader), on a clock the test moves: 2 s per evaluation, 3 s per training step."""
    from torch.utils.data import DataLoader
    from transformers import TrainerControl, TrainerState, TrainingArguments

    now = [100.0]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), eval_strategy="steps", eval_steps=2, report_to="none", use_cpu=True
    )
    state, control = TrainerState(max_steps=4, eval_steps=2), TrainerControl()
    loader = DataLoader(list(range(4)), batch_size=2)  # 4 held-out examples, 2 batches
    progress = ProgressCallback(tmp_path, clock=lambda: now[0])

    def at(t: float) -> dict:
        now[0] = 100.0 + t
        return rundir.read_progress(tmp_path)

    def evaluate(start: float) -> list[dict]:
        seen = []
        for batch in (1, 2):
            at(start + batch)
            progress.on_prediction_step(args, state, control, eval_dataloader=loader)
            seen.append(rundir.read_progress(tmp_path))
        progress.on_log(args, state, control, logs={"eval_loss": 0.69})
        progress.on_evaluate(args, state, control, metrics={"eval_loss": 0.69})
        return seen

    progress.on_train_begin(args, state, control)
    assert at(0)["phase"] == "training" and at(0)["eta_s"] is None
    first = evaluate(0)  # eval_on_start: the parent's held-out figures
    assert first[0] == {
        **first[0],
        "phase": "evaluating",
        "step": 0,
        "eval_examples": 4,
        "eval_batches": 2,
        "eval_batches_done": 1,
        "eta_s": None,
    }  # no step measured yet: no ETA, but progress
    assert first[1]["eval_batches_done"] == 2
    assert rundir.read_progress(tmp_path)["phase"] == "training"

    for step, t in ((1, 5), (2, 8)):
        at(t)
        state.global_step = step
        progress.on_step_end(args, state, control)
    # 3 s per step (the evaluation's 2 s left out) x 2 steps, plus 2 evaluations (steps 2 and 4) x 2 s
    assert rundir.read_progress(tmp_path)["eta_s"] == 6 + 4
    during = evaluate(8)
    assert [p["phase"] for p in during] == ["evaluating", "evaluating"]
    assert [p["eta_s"] for p in during] == [6 + 1 + 2, 6 + 0 + 2]  # steps, the rest of this one, the one at 4
    after = rundir.read_progress(tmp_path)
    assert after["phase"] == "training" and after["eta_s"] == 6 + 2 and "eval_batches" not in after
    progress.finish("succeeded")
    assert rundir.read_progress(tmp_path)["status"] == "succeeded"


# What a real job's child writes, every version of progress.json kept (the child overwrites it): the child module
# itself, run as the supervisor runs it but without accelerate, with rundir.write_progress also appending each record.
RECORDING_CHILD = """
import json, sys, time
from core.training import rundir
history, write = sys.argv[2], rundir.write_progress
def recording(run_dir, progress):
    write(run_dir, progress)
    with open(history, "a") as fh:
        fh.write(json.dumps({**progress, "at": time.monotonic()}) + "\\n")
rundir.write_progress = recording
from core.training import child
sys.exit(child.main([sys.argv[1]]))
"""


@pytest.mark.slow
def test_a_real_job_reports_its_held_out_evaluation_and_a_clean_log(tmp_path):
    from core.labeling.identity import ensure_user
    from core.training.request import JobRequest
    from tests.support import ROOT
    from tests.support.studios import FAST, open_studio

    studio = open_studio(tmp_path / "data")  # 12 labeled prompts: 3 of them fall in the held-out split
    try:
        job_id = studio.supervisor.submit(
            JobRequest("dpo", "base", {**FAST, "save_steps": 1}), ensure_user(studio.db, "ada", "admin", "test")
        )
        run_dir = studio.supervisor.runs_dir / str(job_id)
    finally:
        studio.close()

    held_out = pq.read_table(rundir.eval_data_path(run_dir)).num_rows
    assert held_out > 0
    history = tmp_path / "progress-history.jsonl"
    with open(rundir.log_path(run_dir), "wb") as log:
        done = subprocess.run(
            [sys.executable, "-c", RECORDING_CHILD, str(rundir.config_path(run_dir)), str(history)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert done.returncode == 0, rundir.log_tail(run_dir, 30)
    records = [json.loads(line) for line in history.read_text().splitlines()]
    evaluating = [r for r in records if r["phase"] == "evaluating"]
    # three evaluations: before the first step (the parent), after step 1 and after step 2
    assert {r["step"] for r in evaluating} == {0, 1, 2}
    assert all(r["eval_examples"] == held_out and 1 <= r["eval_batches_done"] <= r["eval_batches"] for r in evaluating)
    assert all(r["status"] == "running" for r in evaluating)
    # the ETA at step 1 counts the evaluations still to come, each at least as long as the one already seen
    first_eval = [r["at"] for r in evaluating if r["step"] == 0]
    step_1 = next(r for r in records if r["step"] == 1 and r["phase"] == "training")
    assert step_1["eta_s"] >= max(first_eval) - min(first_eval)
    assert records[-1]["status"] == "succeeded" and records[-1]["eta_s"] == 0

    tail = rundir.log_tail(run_dir, 200)
    assert "\x1b" not in tail and "\r" not in tail and "[studio] job finished: succeeded" in tail
    bars = [line for line in tail.splitlines() if "%|" in line]
    assert len(bars) == len(set(bars)), bars  # no bar state shown twice


def test_the_runs_page_shows_the_evaluation_and_the_clean_log(tmp_path, monkeypatch):
    """The Runs page (Streamlit's AppTest, a real studio) of a job whose child is evaluating: the files are the ones
    the child writes (progress.json, log.txt), the page reads them through the supervisor."""
    from streamlit.testing.v1 import AppTest

    import core.studio
    from core.labeling.identity import ensure_user
    from core.training.request import JobRequest
    from tests.support import ROOT
    from tests.support.studios import FAST, open_studio

    studio = open_studio(tmp_path / "data")
    monkeypatch.setattr(core.studio, "_current", studio)
    try:
        job_id = studio.supervisor.submit(JobRequest("dpo", "base", FAST), ensure_user(studio.db, "ada", "admin", "t"))
        run_dir = studio.supervisor.runs_dir / str(job_id)
        rundir.write_progress(
            run_dir,
            {
                "step": 24,
                "max_steps": 30,
                "epoch": 1.2,
                "elapsed_s": 300.0,
                "eta_s": 95.0,
                "status": "running",
                "phase": "evaluating",
                "eval_examples": 8,
                "eval_batches": 4,
                "eval_batches_done": 3,
            },
        )
        rundir.log_path(run_dir).write_bytes("\n".join(CAPTURED).encode())
        page = AppTest.from_file(str(ROOT / "pages" / "runs.py"), default_timeout=60).run()
        assert not page.exception, page.exception
        bars = {(p.proto.value, p.proto.text) for p in page.get("progress")}
        assert (80, "step 24 / 30 · evaluating on 8 held-out examples… 3/4 batches · ETA 1m 35s") in bars
        assert (75, "Evaluating on 8 held-out examples… 3/4 batches") in bars
        table = page.dataframe[0].value
        assert table.loc[table["job"] == job_id, "eta"].item().startswith("step 24 / 30 · evaluating on 8")
        assert page.code[0].value == "\n".join(CLEAN)  # the log, as core cleans it for every reader
        assert studio.supervisor.log_tail(job_id) == "\n".join(CLEAN)  # what GET /api/jobs/{id} returns
    finally:
        studio.close()
