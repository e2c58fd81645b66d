"""Trainer callbacks: the only way the training child talks to the supervisor (files in the run dir, whose format
core.training.rundir defines).

- ``MetricsCallback`` appends one JSON row per logging step to ``metrics.jsonl`` (TRL's metric names kept, plus
  ``step``, ``epoch``, ``time``, ``tokens_per_s`` and algorithm-derived metrics such as DPO's ``labeled_logratio``).
- ``ProgressCallback`` overwrites ``progress.json`` atomically at each optimizer step, and during a held-out
  evaluation as its batches go (phase "evaluating"); its ETA counts the evaluations still to come.
- ``CpuShareCallback`` lends a core to the chat while the server says people are chatting (the runs dir's
  ``chat_active`` marker).
- ``SelectionScoreCallback`` adds ``eval_selection_score`` to each evaluation: what early stopping and the best
  checkpoint follow (held-out preference accuracy where the algorithm measures one, ties broken by held-out loss;
  else minus the held-out loss).
- ``ControlCallback`` stats ``control.json`` at each step end: ``pause`` saves a checkpoint and stops, ``cancel``
  stops without saving. A handled command is renamed to ``control.handled.json`` so a resume does not see it again.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.training import rundir
from core.training.common import SELECTION_METRIC
from core.training.distributed import trainer_threads

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss")


def _number(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


class MetricsCallback(TrainerCallback):
    """One JSON line per log event; the end-of-training summary goes to ``summary`` (for result.json) instead."""

    def __init__(self, run_dir: Path, derive: Callable[[dict], dict] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.derive = derive
        self.summary: dict[str, Any] = {}
        self.last_train_row: dict[str, Any] = {}
        self._last_tokens: tuple[float, float] | None = None  # (time, cumulative tokens)

    def on_train_begin(self, args, state, control, **kwargs):
        # Fresh start: every token counter starts at 0. After a resume some counters restart at 0 (TRL's own)
        # and some continue from the checkpoint (GRPO's), so the first row after a resume only sets the baseline.
        self._last_tokens = (time.time(), 0.0) if state.global_step == 0 else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if any(key in logs for key in SUMMARY_KEYS):
            self.summary.update({k: _number(v) for k, v in logs.items()})
            return
        now = time.time()
        row: dict[str, Any] = {"step": state.global_step, "epoch": _number(state.epoch), "time": round(now, 3)}
        row.update({key: _number(value) for key, value in logs.items()})
        tokens = logs.get("num_tokens", logs.get("num_input_tokens_seen"))
        if tokens is not None:
            if self._last_tokens is not None:
                last_time, last_tokens = self._last_tokens
                if tokens >= last_tokens and now > last_time:
                    row["tokens_per_s"] = round((tokens - last_tokens) / (now - last_time), 1)
            self._last_tokens = (now, float(tokens))
        if self.derive is not None:
            row.update(self.derive(row))
        if not rundir.is_eval_row(row):
            self.last_train_row = row
        if state.is_world_process_zero:
            rundir.append_metrics(self.run_dir, row)


ACCURACY_METRICS = ("eval_rewards/accuracies", "eval_accuracy")  # DPO/ORPO family, reward model
NOT_A_CANDIDATE = -1e9
LOSS_TIE_BREAK = 1e-3  # one held-out pair in 48 moves accuracy by 0.02: loss only decides between equal accuracies


def selection_score(metrics: dict[str, Any]) -> float | None:
    """Higher is better: held-out accuracy minus a tiny multiple of the held-out loss, or minus the loss alone."""
    loss = metrics.get("eval_loss")
    loss = None if loss is None or not math.isfinite(float(loss)) else min(float(loss), 100.0)
    accuracy = next((float(metrics[k]) for k in ACCURACY_METRICS if metrics.get(k) is not None), None)
    if accuracy is None:
        return None if loss is None else -loss
    return accuracy - LOSS_TIE_BREAK * (loss or 0.0)


class SelectionScoreCallback(TrainerCallback):
    """Adds ``eval_selection_score`` to the metrics of every evaluation (the Trainer reads it for
    ``metric_for_best_model`` right after the callbacks ran). Must come before ``EarlyStoppingCallback``."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is None:
            return
        score = selection_score(metrics)
        if score is not None and state.global_step == 0:
            # The evaluation before the first step measures the parent: a point on the curves, never the one to
            # keep (no checkpoint holds it, and the job's result is a trained version; the report compares).
            score = NOT_A_CANDIDATE
        if score is not None:
            metrics[f"eval_{SELECTION_METRIC}"] = score


def evaluations_left(step: int, max_steps: int, eval_steps: int, include_step: bool) -> int:
    """How many held-out evaluations the Trainer still runs after ``step`` (and at it, when ``include_step``): one
    every ``eval_steps`` steps, plus one at the last step when ``max_steps`` is not a multiple (transformers'
    DefaultFlowCallback)."""
    if eval_steps <= 0:
        return 0
    first = max(1, step if include_step else step + 1)  # step 0's evaluation is eval_on_start's, already run
    if first > max_steps:
        return 0
    left = max_steps // eval_steps - (first - 1) // eval_steps
    return left + (1 if max_steps % eval_steps else 0)


class ProgressCallback(TrainerCallback):
    """``progress.json``: step, max_steps, epoch, elapsed_s, eta_s, status, and the phase: ``training``, or
    ``evaluating`` with ``eval_examples`` (held-out rows), ``eval_batches`` and ``eval_batches_done``.

    Why the evaluation has its own phase: it runs between two steps, so the step counter stood still for the whole
    of it (~45 s on the default model with 8 held-out pairs, measured in a walk-through) with an ETA that never
    moved. The Trainer calls ``on_prediction_step`` after each evaluation batch and ``on_evaluate`` at the end;
    the ETA is the measured time per training step (evaluations left out) times the steps left, plus the measured
    time of one evaluation times the evaluations left, plus what is left of the current one. Elapsed time adds up
    across resumes."""

    WRITE_EVERY_S = 0.5  # evaluation batches can be milliseconds apart (tiny models): at most 2 writes a second

    def __init__(self, run_dir: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = Path(run_dir)
        self.clock = clock  # seconds; a test passes its own
        self.previous_elapsed = 0.0
        try:
            self.previous_elapsed = float(rundir.read_progress(self.run_dir).get("elapsed_s") or 0.0)
        except (ValueError, TypeError, AttributeError):
            pass
        self.started = self.clock()
        self.first_step = 0
        self.last: dict[str, Any] = {}
        self.mark = self.started  # the last event before which an evaluation cannot have started
        self.eval_started: float | None = None  # while evaluating: when it began
        self.eval_batches_done = 0
        self.eval_batches: int | None = None
        self.eval_examples: int | None = None
        self.eval_durations: list[float] = []  # this session's evaluations, seconds each
        self.evaluated_at: int | None = None  # the step of the last finished evaluation
        self.last_write = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.mark = self.clock()
        self.first_step = state.global_step
        self.eval_durations, self.eval_started, self.evaluated_at = [], None, None
        self._write(state, "running", eta=None)

    def on_step_end(self, args, state, control, **kwargs):
        self.mark = self.clock()
        self._write(state, "running", eta=self._eta(args, state))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.eval_started is None:
            self.mark = self.clock()  # the Trainer logs, then evaluates, then saves

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        now = self.clock()
        if self.eval_started is None:
            self.eval_started, self.eval_batches_done = self.mark, 0
            self.eval_batches = _length(eval_dataloader)
            self.eval_examples = _length(getattr(eval_dataloader, "dataset", None))
            self.last_write = 0.0
        self.eval_batches_done += 1
        if now - self.last_write >= self.WRITE_EVERY_S or self.eval_batches_done == self.eval_batches:
            self._write(state, "running", eta=self._eta(args, state))

    def on_evaluate(self, args, state, control, **kwargs):
        now = self.clock()
        self.eval_durations.append(now - (self.eval_started if self.eval_started is not None else self.mark))
        self.eval_started, self.mark, self.evaluated_at = None, now, state.global_step
        self._write(state, "running", eta=self._eta(args, state) if state.global_step > self.first_step else None)

    def finish(self, status: str) -> None:
        """The last write, with the final status (succeeded / paused / cancelled / failed)."""
        if self.last:
            rundir.write_progress(
                self.run_dir, {**self.last, "status": status, "eta_s": 0 if status == "succeeded" else None}
            )

    def _eta(self, args, state) -> float | None:
        """Seconds left: training steps at the measured rate, then every evaluation still to come."""
        now = self.clock()
        done = state.global_step - self.first_step
        if done <= 0:
            return None  # no step measured yet (the evaluation before the first step)
        evaluating = self.eval_started is not None
        current = now - self.eval_started if self.eval_started is not None else 0.0
        training_s = now - self.started - sum(self.eval_durations) - current
        eta = max(training_s, 0.0) / done * max(0, state.max_steps - state.global_step)
        per_eval = sum(self.eval_durations) / len(self.eval_durations) if self.eval_durations else None
        if evaluating:
            fraction = self.eval_batches_done / self.eval_batches if self.eval_batches else 0.0
            if fraction > 0:
                eta += current / fraction * (1 - fraction)
            elif per_eval is not None:
                eta += max(per_eval - current, 0.0)
        strategy = getattr(args, "eval_strategy", "no")
        if per_eval is not None and getattr(strategy, "value", strategy) == "steps":
            # the evaluation due at this step is still to come unless it runs now (counted above) or just ran
            pending_here = not evaluating and self.evaluated_at != state.global_step
            eta += per_eval * evaluations_left(
                state.global_step, state.max_steps, int(state.eval_steps or 0), include_step=pending_here
            )
        return round(eta, 1)

    def _write(self, state, status: str, eta: float | None) -> None:
        if not state.is_world_process_zero:
            return
        self.last_write = self.clock()
        self.last = {
            "step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": _number(state.epoch) or 0.0,
            "elapsed_s": round(self.previous_elapsed + self.clock() - self.started, 1),
            "eta_s": eta,
            "status": status,
            "phase": "evaluating" if self.eval_started is not None else "training",
        }
        if self.eval_started is not None:
            self.last.update(
                eval_examples=self.eval_examples,
                eval_batches=self.eval_batches,
                eval_batches_done=self.eval_batches_done,
            )
        rundir.write_progress(self.run_dir, self.last)


def _length(obj: Any) -> int | None:
    """``len(obj)``, or None for an object without one (an iterable dataset)."""
    try:
        return len(obj)
    except TypeError:
        return None


class CpuShareCallback(TrainerCallback):
    """Between steps: all cores, or one fewer while the chat is active
    (see ``core.training.distributed.trainer_threads``).

    torch.set_num_threads takes effect at the next parallel region, so a chat waits at most one step.
    """

    def __init__(self, run_dir: Path) -> None:
        self.runs_dir = Path(run_dir).parent
        self.threads: int | None = None

    def _adjust(self) -> None:
        import torch

        wanted = trainer_threads(rundir.chat_active(self.runs_dir))
        if wanted != self.threads:
            torch.set_num_threads(wanted)
            self.threads = wanted

    def on_train_begin(self, args, state, control, **kwargs):
        self._adjust()

    def on_step_begin(self, args, state, control, **kwargs):
        self._adjust()

    def on_substep_end(self, args, state, control, **kwargs):
        self._adjust()


class ControlCallback(TrainerCallback):
    """Pause / cancel requests from the supervisor, checked cheaply (one ``stat``) after every optimizer step."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = rundir.control_path(self.run_dir)
        self.action: str | None = None  # what was acted on
        self.pending: str | None = None  # read, not yet acted on (a pause read mid-step)
        self.step: int | None = None
        self._seen: tuple[int, int] | None = None

    def _poll(self) -> str | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature == self._seen:
            return None
        action = rundir.read_control(self.run_dir)
        if action is not None:
            self._seen = signature  # a half-written file is read again at the next step
        return action

    def _decide(self, args) -> str | None:
        action = self._poll() if args.process_index == 0 else None
        if args.world_size > 1:  # every rank must stop at the same step
            from accelerate.utils import broadcast_object_list

            box = [action]
            broadcast_object_list(box, from_process=0)
            action = box[0]
        return action

    def on_step_end(self, args, state, control, **kwargs):
        return self._check(args, state, control, at_step_end=True)

    def on_substep_end(self, args, state, control, **kwargs):
        # Between gradient-accumulation passes: a cancel acts at once; a pause waits for the step boundary so the
        # checkpoint holds a whole optimizer step.
        return self._check(args, state, control, at_step_end=False)

    def _check(self, args, state, control, at_step_end: bool):
        if self.action is not None:
            return control
        if self.pending in (None, "pause"):  # a cancel written after a pending pause still wins
            self.pending = self._decide(args) or self.pending
        if self.pending is None or (self.pending == "pause" and not at_step_end):
            return control
        self.action, self.step = self.pending, state.global_step
        control.should_training_stop = True
        control.should_save = self.action == "pause"  # pause: checkpoint now; cancel: stop at once, save nothing
        if self.action == "cancel":
            control.should_evaluate = False
        if state.is_world_process_zero:
            print(f"[studio] {self.action} requested: stopping at step {state.global_step}", flush=True)
            rundir.consume_control(self.run_dir)
        return control
