"""The run-dir format: every file in ``runs/<id>/``, defined once.

The server's supervisor (core.training.jobs) and the training child (core.training.child, callbacks) share only
these files (DESIGN.md "Data flow"); the benchmarks write and read them the same way. Who writes what:

    config.json      the supervisor, before the child starts (``JobConfig``); ``resume`` is set to true again
                     when a paused / interrupted / failed job is resumed
    accelerate.yaml  the supervisor: the job's launch mode as an accelerate config (core.training.distributed)
    data/            the supervisor: frozen snapshots ``train.parquet`` and, with a held-out split, ``eval.parquet``
    control.json     the supervisor: {"action": "pause" | "cancel", "time"}; the child renames it to
                     ``control.handled.json`` once acted on, so a resumed job does not act on it again
    metrics.jsonl    the child: one JSON row per logging step (TRL metric names + step, epoch, time, tokens_per_s,
                     ...); append-only, also across resumes (a resume from an older checkpoint re-logs those
                     steps: readers keep the last row per step). The supervisor reads it incrementally.
    progress.json    the child: {"step", "max_steps", "epoch", "elapsed_s", "eta_s", "status", "phase"}, rewritten
                     atomically each step; ``phase`` is "training", or "evaluating" (a held-out evaluation between
                     two steps) with "eval_examples", "eval_batches", "eval_batches_done", rewritten as it goes
    checkpoints/     the child: checkpoint-<step>/ (HF Trainer checkpoints; a resume continues from the latest
                     COMPLETE one)
    adapter/         the child: the trained LoRA adapter (PEFT layout + tokenizer + studio_training.json), or
                     model/ after full fine-tuning (core.training.weights.save_trained)
    result.json      the child, LAST and atomically: {"status": "succeeded" | "paused" | "cancelled" | "failed",
                     ...} (see core.training.child); a resumed job first sets the previous one aside as
                     ``result.previous.json``
    log.txt          the child's stdout and stderr (the supervisor opens it, the child prints into it); readers
                     show ``log_tail``, cleaned of tqdm's in-place redraws and escape codes (``clean_log``)
    cache/, tmp/     the child: datasets' cache files and temp files; removed on success, kept for a resume

And one file in the runs dir itself: ``chat_active``, touched by the server whenever the chat generates, read by
running trainers between steps (they lend a core to the chat while it is fresh).

Cheap to import (no DuckDB, torch or transformers at import): the training child, the supervisor and the
benchmarks all import it. Parquet is written with pyarrow, imported only inside ``write_parquet``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ValidationError

CONFIG_FILE = "config.json"
ACCELERATE_FILE = "accelerate.yaml"
DATA_DIR = "data"
TRAIN_DATA_FILE = "train.parquet"
EVAL_DATA_FILE = "eval.parquet"
CONTROL_FILE = "control.json"
HANDLED_CONTROL_FILE = "control.handled.json"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
PREVIOUS_RESULT_FILE = "result.previous.json"
LOG_FILE = "log.txt"
CHECKPOINTS_DIR = "checkpoints"
CACHE_DIR = "cache"
TMP_DIR = "tmp"
CONTROL_ACTIONS = ("pause", "cancel")
CHAT_ACTIVE_FILE = "chat_active"  # in the runs dir; touched by the server whenever the chat generates
CHAT_ACTIVE_WINDOW_S = 60.0  # a trainer lends a core to the chat for this long after the last touch


# -- config.json ---------------------------------------------------------------------------------------------------


@dataclass
class JobConfig:
    """``runs/<id>/config.json``: what the child trains. The supervisor may add its own keys (ignored here)."""

    job_id: int
    algorithm: str
    base_model: str
    parent_adapter: str | None = None
    reward_model: str | None = None
    hyperparams: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, path: Path) -> JobConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValidationError(f"config file {path} does not exist", hint="pass runs/<id>/config.json") from None
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"config file {path} is not valid JSON: {exc}", hint="rewrite the job config"
            ) from None
        if not isinstance(data, dict):
            raise ValidationError(f"config file {path} must hold a JSON object", hint="rewrite the job config")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [name for name in ("job_id", "algorithm", "base_model") if name not in data]
        if missing:
            raise ValidationError(f"config.json lacks {', '.join(missing)}", hint="the supervisor must write them")
        if not isinstance(data.get("hyperparams") or {}, dict):
            raise ValidationError("config.json hyperparams must be an object", hint='e.g. {"learning_rate": 1e-4}')
        data["hyperparams"] = data.get("hyperparams") or {}
        # Other top-level keys (dataset hash, timestamps, ...) are the supervisor's metadata: ignored here.
        return cls(**{k: v for k, v in data.items() if k in known})


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG_FILE


def write_config(run_dir: Path, config: JobConfig) -> Path:
    """Write config.json atomically; its path (the child's only argument)."""
    path = config_path(run_dir)
    write_json_atomic(path, config.to_dict())
    return path


def set_resume(run_dir: Path) -> None:
    """Ask the next start of the child to continue from the latest checkpoint (other keys are kept as written)."""
    config = json.loads(config_path(run_dir).read_text())
    config["resume"] = True
    write_json_atomic(config_path(run_dir), config)


def accelerate_path(run_dir: Path) -> Path:
    return Path(run_dir) / ACCELERATE_FILE


# -- data/ ---------------------------------------------------------------------------------------------------------


def train_data_path(run_dir: Path) -> Path:
    return Path(run_dir) / DATA_DIR / TRAIN_DATA_FILE


def eval_data_path(run_dir: Path) -> Path:
    return Path(run_dir) / DATA_DIR / EVAL_DATA_FILE


def write_parquet(rows: list[dict], path: Path) -> None:
    """Rows as one parquet file, written under a temporary name and renamed (never half a file). Its columns are
    every key any row has (a key some rows leave out, such as ``chosen_cut``, is null there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = Path(path).with_suffix(".tmp")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    pq.write_table(pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in columns}), tmp)
    os.replace(tmp, path)


def write_data(run_dir: Path, rows: list[dict], eval_rows: list[dict] | None = None) -> None:
    """The frozen data snapshot: ``data/train.parquet`` and, when there are held-out rows, ``data/eval.parquet``."""
    (Path(run_dir) / DATA_DIR).mkdir(parents=True, exist_ok=True)
    write_parquet(rows, train_data_path(run_dir))
    if eval_rows:
        write_parquet(eval_rows, eval_data_path(run_dir))


# -- control.json --------------------------------------------------------------------------------------------------


def control_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONTROL_FILE


def request_control(run_dir: Path, action: str) -> None:
    """The supervisor asks a running child to pause or cancel (it looks after every step)."""
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}")
    write_json_atomic(control_path(run_dir), {"action": action, "time": time.time()})


def read_control(run_dir: Path) -> str | None:
    """The action in ``control.json`` ("pause" / "cancel"), or None when absent or unreadable (half-written)."""
    try:
        action = json.loads(control_path(run_dir).read_text()).get("action")
    except (OSError, ValueError, AttributeError):
        return None
    return action if action in CONTROL_ACTIONS else None


def consume_control(run_dir: Path) -> None:
    """Mark the current command handled, so the resumed job does not act on it a second time."""
    try:
        os.replace(control_path(run_dir), Path(run_dir) / HANDLED_CONTROL_FILE)
    except OSError:
        pass


# -- metrics.jsonl -------------------------------------------------------------------------------------------------


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / METRICS_FILE


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """One row, one line, flushed at once (the supervisor may read while the child writes)."""
    with open(metrics_path(run_dir), "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every row logged so far (none when the file does not exist yet); a line cut short is skipped."""
    rows, _ = read_new_metrics(run_dir, 0)
    return rows


def read_new_metrics(run_dir: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The rows after byte ``offset`` and the offset to continue from. A line still being written waits for the
    next read; a line that is not JSON is skipped."""
    path = metrics_path(run_dir)
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    rows = []
    for line in complete.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, offset + len(complete)


def is_eval_row(row: dict[str, Any]) -> bool:
    """Rows of a held-out evaluation carry ``eval_*`` metrics; training rows none."""
    return any(key.startswith("eval_") for key in row)


# -- progress.json, result.json ------------------------------------------------------------------------------------


def progress_path(run_dir: Path) -> Path:
    return Path(run_dir) / PROGRESS_FILE


def write_progress(run_dir: Path, progress: dict[str, Any]) -> None:
    write_json_atomic(progress_path(run_dir), progress)


def read_progress(run_dir: Path) -> dict[str, Any]:
    """The child's last progress write; {} before its first one (or when unreadable)."""
    return read_json(progress_path(run_dir)) or {}


def result_path(run_dir: Path) -> Path:
    return Path(run_dir) / RESULT_FILE


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    write_json_atomic(result_path(run_dir), result)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The child's result.json, or None while it runs (or when it died before writing one)."""
    return read_json(result_path(run_dir))


def set_aside_result(run_dir: Path) -> None:
    """A resumed job must not look finished (or paused) to a supervisor that re-attaches while it runs."""
    if result_path(run_dir).is_file():
        os.replace(result_path(run_dir), Path(run_dir) / PREVIOUS_RESULT_FILE)


def clear_stale_files(run_dir: Path) -> None:
    """Before (re)starting a child: the previous attempt's result, request and progress are not this one's."""
    for path in (result_path(run_dir), control_path(run_dir), progress_path(run_dir)):
        path.unlink(missing_ok=True)


# -- log.txt -------------------------------------------------------------------------------------------------------


def log_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOG_FILE


LOG_TAIL_BYTES = 128_000  # read from the end; a 1000-step tqdm bar redrawn in place is ~80 kB of one line
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# tqdm's bar with a total ("desc: 45%|####  | 9/20 [00:01<00:02, 4.5it/s]") and without one ("desc: 62 examples
# [00:00, 3922.81 examples/s]"); whatever follows the closing bracket on the same line was printed over the bar.
_BAR = re.compile(
    r"(?P<desc>[^|\[\]]*?)\s*(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+(?:\.\d+)?[kMG]?)/"
    r"(?P<total>\d+(?:\.\d+)?[kMG]?)\s*\[[^\]]*\]"
)
_COUNTER = re.compile(
    r"(?P<desc>[^|\[\]]+?):\s+(?P<n>\d+(?:\.\d+)?[kMG]?)(?P<unit>\s?[^\s\[\]\d]*)\s"
    r"\[\d+:\d+(?::\d+)?,\s*[^\]]*\]"
)


@dataclass
class _Bar:
    """One progress bar's latest state in a run of consecutive progress lines."""

    key: str
    n: float
    text: str
    complete: bool = False
    states: int = 1


def _bar(line: str) -> tuple[_Bar | None, str]:
    """The progress bar at the start of ``line`` (or None) and the text printed after it on the same line."""
    match = _BAR.match(line) or _COUNTER.match(line)
    if match is None:
        return None, line
    n = match["n"]
    value = float(n[:-1]) * {"k": 1e3, "M": 1e6, "G": 1e9}[n[-1]] if n[-1] in "kMG" else float(n)
    of = match["total"] if "total" in match.re.groupindex else match["unit"]
    key = f"{match['desc'].strip().rstrip(':')}/{of.strip()}"
    complete = "pct" in match.re.groupindex and match["pct"] == "100"
    return _Bar(key, value, line[: match.end()].rstrip(), complete), line[match.end() :].strip()


def _last_state(line: str) -> str:
    """What a terminal would show of ``line``: the last non-blank part after a carriage return or another cursor
    move or erase (tqdm redraws its bar in place with ``\\r``); colours removed."""
    parts = re.split(r"\r|\x1b\[[0-?]*[ -/]*[@-ln-~]", line)  # every CSI but SGR ("m": colours) moves or erases
    last = next((part for part in reversed(parts) if part.strip()), "")
    return _ANSI.sub("", last).rstrip()


def clean_log(text: str) -> list[str]:
    """A trainer's raw output as the lines a person should read.

    The child's stdout/stderr go to log.txt unchanged, so tqdm's in-place redraws pile up there: one line holds
    every state of a bar separated by carriage returns, nested bars (held-out evaluation inside training) move the
    cursor with ``ESC[A``, and after each evaluation tqdm redraws bars it already finished. Shown raw, that was
    escape boxes and the same bar many times. Here: each line keeps its last state, escape sequences go, a log
    record printed over a bar gets its own line, and a run of progress lines keeps each bar's latest state
    (a bar that merely redraws a state already shown is dropped; one that completes a bar shown just above,
    with a log record in between, replaces it)."""
    out: list[str] = []
    shown: dict[str, tuple[float, int]] = {}  # each bar's state as last shown, and its line in ``out``
    pending: list[_Bar] = []  # the current run of progress lines

    def flush() -> None:
        for bar in pending:
            state, where = shown.get(bar.key, (None, -1))
            if bar.states == 1 and state == bar.n:
                continue  # a redraw of what is already shown
            if bar.states == 1 and bar.complete and state is not None and bar.n > state and len(out) - where <= 2:
                out[where] = bar.text  # e.g. the evaluation's last batch, drawn after its metrics
                shown[bar.key] = (bar.n, where)
                continue
            out.append(bar.text)
            shown[bar.key] = (bar.n, len(out) - 1)
        pending.clear()

    # A nested bar (evaluation inside training) returns to the outer one with ESC[A, and what is printed next
    # lands after it: a line break in the log's terms.
    for line in map(_last_state, re.split(r"\n|\x1b\[\d*A", text)):
        if not line.strip():
            continue  # blank, or cleared by a bar
        bar, rest = _bar(line)
        if bar is not None:
            same = next((b for b in reversed(pending) if b.key == bar.key), None)
            if same is not None and bar.n >= same.n:
                same.states += bar.n > same.n  # the same state drawn again is no progress
                same.n, same.text = bar.n, bar.text
            else:
                pending.append(bar)
        if rest:
            flush()
            out.append(rest)
    flush()
    return out


def log_tail(run_dir: Path, lines: int) -> str:
    """The last ``lines`` lines of the log, cleaned of progress-bar redraws and escape codes (``clean_log``; the
    Runs page, the job's REST record and a failed job's error all show this). "" when there is no log."""
    try:
        with open(log_path(run_dir), "rb") as fh:
            fh.seek(0, os.SEEK_END)
            start = max(0, fh.tell() - LOG_TAIL_BYTES)
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if start > 0:  # the window cut its first line: drop the cut part (a later \r redraw of it is whole)
        ends = [i for i in (text.find("\r"), text.find("\n")) if i >= 0]
        text = text[min(ends) + 1 :] if ends else ""
    return "\n".join(clean_log(text)[-lines:])


# -- checkpoints/ --------------------------------------------------------------------------------------------------


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the Trainer saves the checkpoint of ``step``."""
    return checkpoints_dir(run_dir) / f"checkpoint-{step}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest COMPLETE checkpoint: the Trainer writes trainer_state.json last, so a checkpoint cut short
    (disk full, kill -9 mid-save) lacks it and is never resumed from."""
    checkpoints = sorted(
        (p for p in checkpoints_dir(run_dir).glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
        key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
    )
    return checkpoints[-1] if checkpoints else None


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints cut short (no trainer_state.json): never resumed from, removed after a full disk."""
    return [
        p
        for p in checkpoints_dir(run_dir).glob("checkpoint-*")
        if p.is_dir() and not (p / "trainer_state.json").is_file()
    ]


# -- the runs dir's chat_active marker -----------------------------------------------------------------------------


def mark_chat_active(runs_dir: Path) -> None:
    """Tell running trainers (they check between steps) that the chat needs a core now."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / CHAT_ACTIVE_FILE).touch()


def chat_active(runs_dir: Path) -> bool:
    """True while the chat generated in the last CHAT_ACTIVE_WINDOW_S seconds."""
    try:
        return time.time() - (Path(runs_dir) / CHAT_ACTIVE_FILE).stat().st_mtime < CHAT_ACTIVE_WINDOW_S
    except FileNotFoundError:
        return False


# -- JSON files ----------------------------------------------------------------------------------------------------


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=2, default=_json_default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or not (yet) valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _json_default(value: Any) -> Any:
    """numpy / torch scalars and paths, which TRL's logs and results may hold."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
