"""Export: adapters, merged models and datasets to local folders, zips and the Hugging Face Hub.

Three kinds of export, each a complete folder under ``<data-dir>/exports/<id>-<name>/`` listed in the
``exports`` table (written only once the folder is complete, so nothing is half-registered):

``adapter``  the LoRA adapter of a policy version in standard PEFT layout (``adapter_config.json``,
             ``adapter_model.safetensors``, tokenizer files) with a model card generated from the run:
             YAML metadata (base_model, library_name: peft, tags with trl and the algorithm, datasets,
             license), training config, data hash, metrics table and a loss / reward / KL plot
             (``training_curves.png``). Loads with ``PeftModel.from_pretrained(base, folder_or_repo)``.
``merged``   the adapter merged into its base weights (``merge_and_unload``), saved as safetensors in
             float32, float16 or bfloat16, with tokenizer and card. A fully fine-tuned version is
             converted the same way.
``dataset``  a training set of the labels (preference, reward, KTO or SFT builder of core.data.trainsets) as
             ``data/train.parquet`` and/or ``data/train.jsonl`` with a dataset card.

:func:`push_export` uploads a folder with the real ``huggingface_hub`` client (``HF_ENDPOINT`` is honoured)
as a model or dataset repo. The row in ``hub_pushes`` (repo id, commit URL, date) is written only after
the Hub confirmed the commit. The adapter manifest (:func:`adapter_manifest`) lists every pushed adapter
with base model, version, repo and commit; :func:`suggest_repo_id` proposes the repo a version went to
before, so a later push updates the same repo.

Errors from the Hub become :class:`HubError` subclasses with a stable code and a hint (401, 403, 404,
409, network down, offline mode); network failures and 5xx answers are retried with a short backoff.

The token comes from the caller (a one-off form field) or ``HF_TOKEN``. It is passed to ``HfApi`` only:
never written to DuckDB, files, logs or exception messages (any text from the client is scrubbed).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from core.errors import NotFound, PermissionDenied, StudioError, ValidationError
from storage.db import Database

EXPORTS_SUBDIR = "exports"
DTYPES = ("float32", "float16", "bfloat16")
DATASET_KINDS = ("preference", "reward", "unpaired", "sft")
DATASET_FORMATS = ("parquet", "jsonl")
LICENSES = ("apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "openrail", "other")
CURVES_FILE = "training_curves.png"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")   # no owner: the token's user namespace
# What a model spec means on the Hub, for the card's base_model (local dirs and "tiny" have no Hub id).
KNOWN_BASES = {"default": "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}

Progress = Callable[[float, str], None]


# --- errors --------------------------------------------------------------------------------------------------


class HubError(StudioError):
    """The Hugging Face Hub refused or could not be reached. ``retryable``: trying again may help."""

    code = "hub_error"
    http_status = 502
    retryable = False


class HubAuthError(HubError):
    code = "hub_unauthorized"
    http_status = 401


class HubForbidden(HubError):
    code = "hub_forbidden"
    http_status = 403


class HubNotFound(HubError):
    code = "hub_not_found"
    http_status = 404


class HubConflict(HubError):
    code = "hub_conflict"
    http_status = 409
    retryable = True


class HubUnreachable(HubError):
    code = "hub_unreachable"
    http_status = 503
    retryable = True


# --- options (the Export page's forms are generated from these) ----------------------------------------------


@dataclass
class CardOptions:
    """What the generated model / dataset card says beyond what the run records."""

    license: str = field(default="apache-2.0", metadata={
        "help": "Licence in the card's metadata. The base model's licence still applies to its weights.",
        "choices": LICENSES})
    base_model_id: str | None = field(default=None, metadata={
        "help": "Hub id of the base model for the card's base_model (detected for the default model and Hub "
                "ids; needed for a local base directory)."})
    datasets: tuple[str, ...] = field(default=(), metadata={
        "help": "Hub dataset repos the training data was published to (the card's `datasets`), comma-separated."})


@dataclass
class PushOptions:
    """Where and how an export goes to the Hub."""

    repo_id: str = field(default="", metadata={
        "help": "owner/name on the Hub, or just a name for your own namespace. Suggested: the repo this export "
                "(or this version, or the last adapter of this base) went to before, so pushes update one repo."})
    private: bool = field(default=True, metadata={"help": "Create the repo as private (ignored if it exists)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message (default: generated)."})


@dataclass(frozen=True)
class ExportResult:
    id: int
    kind: str
    path: Path
    files: tuple[str, ...]


@dataclass(frozen=True)
class PushResult:
    export_id: int
    repo_id: str
    repo_type: str
    commit_url: str
    commit_oid: str
    attempts: int


# --- local exports -------------------------------------------------------------------------------------------


def exports_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / EXPORTS_SUBDIR


def exportable_versions(db: Database) -> list[dict[str, Any]]:
    """Live policy versions with weights of their own: an adapter, or full weights (``model_path``)."""
    rows = db.query("SELECT id, name, algorithm, base_model, adapter_path, config, created_at FROM policies"
                    " WHERE deleted_at IS NULL AND algorithm IS NOT NULL AND algorithm <> 'reward' ORDER BY id")
    out = []
    for row in rows:
        config = json.loads(row["config"]) if row["config"] else {}
        if row["adapter_path"] or config.get("model_path"):
            out.append({**row, "config": config, "has_adapter": bool(row["adapter_path"])})
    return out


def export_adapter(db: Database, data_dir: Path | str, version: str, user: Any,
                   card: CardOptions | None = None) -> ExportResult:
    """The version's LoRA adapter in standard PEFT layout, with tokenizer, model card and training curves."""
    _require_admin(user)
    card = card or CardOptions()
    policy = _policy(db, version)
    if not policy["adapter_path"]:
        raise ValidationError(f"{version} has no LoRA adapter (it was fully fine-tuned)",
                              hint="export it as a merged model instead")
    adapter_dir = _existing_dir(policy["adapter_path"], version)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise NotFound(f"{adapter_dir} has no adapter_config.json", hint="the adapter directory is incomplete")
    base_id = card.base_model_id or base_hub_id(policy["base_model"])

    def build(out: Path) -> dict[str, Any]:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        if base_id:
            config["base_model_name_or_path"] = base_id  # resolvable by AutoPeftModel outside this machine
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _copy_adapter_weights(adapter_dir, out)
        _tokenizer(adapter_dir, policy, data_dir).save_pretrained(str(out))
        _write_run_files(db, policy, card, base_id, out, "adapter")
        return {"kind": "adapter", "policy_id": policy["id"], "version": version,
                "base_model": base_id or policy["base_model"], "data_hash": policy["data_hash"]}

    return _register(db, data_dir, f"{version}-adapter", build, user)


def export_merged(db: Database, data_dir: Path | str, version: str, user: Any, dtype: str = "float32",
                  card: CardOptions | None = None) -> ExportResult:
    """Base + adapter merged into plain weights (safetensors) in ``dtype``; full fine-tunes are converted."""
    policy, card, base_id = _prepare(db, user, version, card, ("dtype", dtype, DTYPES))

    def build(out: Path) -> dict[str, Any]:
        def merge() -> None:
            import torch

            model, tokenizer = _merged_model(policy, version, data_dir)
            model = model.to(getattr(torch, dtype))
            if base_id:
                model.config._name_or_path = base_id
            model.save_pretrained(str(out), safe_serialization=True)
            tokenizer.save_pretrained(str(out))

        from core.serving.generate import in_short_thread

        in_short_thread(merge, name="studio-export")
        _write_run_files(db, policy, card, base_id, out, "merged", dtype)
        return {"kind": "merged", "policy_id": policy["id"], "version": version,
                "base_model": base_id or policy["base_model"], "dtype": dtype, "data_hash": policy["data_hash"]}

    return _register(db, data_dir, f"{version}-merged-{dtype}", build, user)


def export_gguf(db: Database, data_dir: Path | str, version: str, user: Any, quant: str = "q8_0",
                card: CardOptions | None = None, progress: Callable[[int, int, str], None] | None = None
                ) -> ExportResult:
    """The merged version as one GGUF file (core.share.gguf_export) with an Ollama ``Modelfile`` and a card: runs in
    llama.cpp, Ollama and LM Studio; transformers loads it back with ``gguf_file=``."""
    from core.serving.generate import SamplingParams, in_short_thread
    from core.share.gguf_export import GGUF_TYPES, modelfile, write_gguf

    policy, card, base_id = _prepare(db, user, version, card, ("GGUF type", quant, GGUF_TYPES))
    file_name = f"{_slug(version)}-{quant}.gguf"

    def build(out: Path) -> dict[str, Any]:
        def convert() -> dict[str, Any]:
            model, tokenizer = _merged_model(policy, version, data_dir)
            title = f"{(base_id or 'model').split('/')[-1]} {version} (RLHF Studio)"
            info = write_gguf(model, tokenizer, out / file_name, quant, title, progress)
            sampling = SamplingParams()
            (out / "Modelfile").write_text(modelfile(file_name, tokenizer, sampling.temperature, sampling.top_p,
                                                     sampling.max_new_tokens), encoding="utf-8")
            return info

        info = in_short_thread(convert, name="studio-export")
        _write_run_files(db, policy, card, base_id, out, "gguf", quant, gguf=(file_name, info))
        return {"kind": "gguf", "policy_id": policy["id"], "version": version,
                "base_model": base_id or policy["base_model"], "dtype": quant, "data_hash": policy["data_hash"]}

    return _register(db, data_dir, f"{version}-{quant}-gguf", build, user)


QUANTIZED_BITS = ("nf4", "int8")


def export_quantized(db: Database, data_dir: Path | str, version: str, user: Any, bits: str = "nf4",
                     card: CardOptions | None = None) -> ExportResult:
    """The merged version quantized with bitsandbytes (4-bit NF4 or 8-bit), saved so ``from_pretrained`` loads it
    quantized. bitsandbytes quantizes on CUDA: elsewhere this refuses and points to GGUF, which is built for CPUs."""
    import torch

    policy, card, base_id = _prepare(db, user, version, card, ("bitsandbytes type", bits, QUANTIZED_BITS))
    if not torch.cuda.is_available():
        raise ValidationError("bitsandbytes quantization needs a CUDA GPU, and this machine has none",
                              hint="export GGUF q8_0 or q4_0 instead (it is made for CPUs), or run this export "
                                   "on a machine with a GPU", code="needs_cuda")

    def build(out: Path) -> dict[str, Any]:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        merged_dir = out / ".merged"
        model, tokenizer = _merged_model(policy, version, data_dir)
        model.save_pretrained(str(merged_dir), safe_serialization=True)
        del model
        quantization = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                           bnb_4bit_compute_dtype=torch.bfloat16) if bits == "nf4"
                        else BitsAndBytesConfig(load_in_8bit=True))
        quantized = AutoModelForCausalLM.from_pretrained(str(merged_dir), quantization_config=quantization,
                                                         device_map={"": 0})
        if base_id:
            quantized.config._name_or_path = base_id
        quantized.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
        shutil.rmtree(merged_dir)
        _write_run_files(db, policy, card, base_id, out, "quantized", bits)
        return {"kind": "quantized", "policy_id": policy["id"], "version": version,
                "base_model": base_id or policy["base_model"], "dtype": bits, "data_hash": policy["data_hash"]}

    return _register(db, data_dir, f"{version}-{bits}", build, user)


def export_dataset(db: Database, data_dir: Path | str, kind: str, user: Any, filters: Any = None,
                   formats: Iterable[str] = DATASET_FORMATS, card: CardOptions | None = None,
                   name: str | None = None) -> ExportResult:
    """A training set built from the labels (core.data.trainsets) as parquet and/or JSONL, with a dataset card."""
    from core.data import trainsets
    from core.training.jobs import content_hash

    _require_admin(user)
    card = card or CardOptions()
    formats = tuple(dict.fromkeys(formats))
    if kind not in DATASET_KINDS:
        raise ValidationError(f"Unknown dataset kind {kind!r}", hint=f"use one of {', '.join(DATASET_KINDS)}")
    if not formats or set(formats) - set(DATASET_FORMATS):
        raise ValidationError(f"Formats must be among {', '.join(DATASET_FORMATS)}, got {list(formats)}",
                              hint="pick parquet, jsonl or both")
    filters = filters if isinstance(filters, trainsets.Filters) else trainsets.filters_from_dict(filters)
    built = {"preference": lambda: trainsets.preference_rows(db, filters),
             "reward": lambda: trainsets.preference_rows(db, filters, margin_from_ratings=True),
             "unpaired": lambda: trainsets.unpaired_rows(db, filters),
             "sft": lambda: trainsets.sft_rows(db, filters)}[kind]()
    if not built.rows:
        raise ValidationError(f"No {kind} rows match these filters (skipped: {built.stats['skipped'] or 'none'})",
                              hint="label more, or loosen the filters")
    data_hash = content_hash(built.rows)
    filters_json = _jsonable(asdict(filters))

    def build(out: Path) -> dict[str, Any]:
        (out / "data").mkdir()
        if "parquet" in formats:
            trainsets.to_dataset(kind, built.rows).to_parquet(str(out / "data" / "train.parquet"))
        if "jsonl" in formats:
            with open(out / "data" / "train.jsonl", "w", encoding="utf-8") as fh:
                for row in built.rows:
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        (out / "README.md").write_text(_dataset_card(kind, built.rows, built.stats["skipped"], data_hash, filters_json,
                                                     formats, card, name),
                                       encoding="utf-8")
        return {"kind": "dataset", "dataset_kind": kind, "filters": json.dumps(filters_json),
                "rows": len(built.rows), "data_hash": data_hash}

    return _register(db, data_dir, f"{name or kind}-dataset", build, user)


def export_training_data(db: Database, data_dir: Path | str, version: str, user: Any,
                         card: CardOptions | None = None) -> ExportResult:
    """The exact rows a version was trained on (frozen in its run directory when the job started), as a dataset.

    It carries the version's data hash, so once it is pushed, the model cards of that version name its repo in
    ``datasets`` by themselves."""
    import pyarrow.parquet as pq

    from core.training import ALGORITHMS

    _require_admin(user)
    card = card or CardOptions()
    policy = _policy(db, version)
    kind = ALGORITHMS[policy["algorithm"]].dataset_kind
    run_dir = db.scalar("SELECT run_dir FROM jobs WHERE id = ?", [policy["job_id"]]) if policy["job_id"] else None
    train = Path(run_dir or "") / "data" / "train.parquet"
    if not run_dir or not train.is_file():
        raise NotFound(f"The training data of {version} is gone", hint="it lives in the run directory of its job; "
                       "export the labels with filters instead")
    if kind not in DATASET_KINDS:
        raise ValidationError(f"{version} was trained on {kind}, which has no dataset card format",
                              hint="export the labels with filters instead")
    rows = pq.read_table(train).to_pylist()

    def build(out: Path) -> dict[str, Any]:
        (out / "data").mkdir()
        shutil.copyfile(train, out / "data" / "train.parquet")
        with open(out / "data" / "train.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        name = f"Training data of {version}"
        (out / "README.md").write_text(_dataset_card(kind, rows, {}, policy["data_hash"] or "n/a",
                                                     {"version": version}, DATASET_FORMATS, card, name),
                                       encoding="utf-8")
        return {"kind": "dataset", "dataset_kind": kind, "version": version, "policy_id": policy["id"],
                "filters": json.dumps({"version": version}), "rows": len(rows), "data_hash": policy["data_hash"]}

    return _register(db, data_dir, f"{version}-training-data", build, user)


def list_exports(db: Database) -> list[dict[str, Any]]:
    """Every export, newest first, with its latest push (repo, commit URL) if any."""
    rows = db.query(
        "SELECT e.id, e.kind, e.version, e.base_model, e.dtype, e.dataset_kind, e.rows, e.data_hash, e.path,"
        " e.created_at, h.repo_id, h.repo_type, h.private, h.commit_url, h.pushed_at"
        " FROM exports e LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY export_id ORDER BY id DESC) AS n"
        " FROM hub_pushes) h ON h.export_id = e.id AND h.n = 1 ORDER BY e.id DESC")
    for row in rows:
        for key in ("created_at", "pushed_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows


def get_export(db: Database, export_id: int) -> dict[str, Any]:
    rows = db.query("SELECT * FROM exports WHERE id = ?", [export_id])
    if not rows:
        raise NotFound(f"Export {export_id} does not exist", hint="pick one from the list of exports")
    return rows[0]


def zip_export(db: Database, export_id: int) -> tuple[str, bytes]:
    """(file name, zip bytes) of an export folder; weights are stored, text is deflated."""
    export = get_export(db, export_id)
    folder = Path(export["path"])
    if not folder.is_dir():
        raise NotFound(f"The files of export {export_id} are gone ({folder})", hint="export it again")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            compress = zipfile.ZIP_STORED if path.suffix in (".safetensors", ".parquet", ".png") else zipfile.ZIP_DEFLATED
            zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}", compress_type=compress)
    return f"{folder.name}.zip", buffer.getvalue()


# --- the Hub -------------------------------------------------------------------------------------------------


def resolve_token(one_off: str | None = None) -> str:
    """The one-off token if given, else ``HF_TOKEN``; never read from or written to the database."""
    token = (one_off or "").strip() or os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise HubAuthError("No Hugging Face token", hint="set HF_TOKEN before starting the studio, or paste a "
                           "write token (huggingface.co/settings/tokens) into the one-off field")
    return token


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def whoami(token: str) -> str:
    """The Hub user name behind a token (checks the token before anything is uploaded)."""
    api = _api(token)
    return _call(lambda: api.whoami()["name"], token, "checking the token")


def suggest_repo_id(db: Database, export_id: int, username: str | None = None) -> str:
    """Where this export should go: the repo it (or, for adapters, its version / the latest adapter of the
    same base) was pushed to before, so later pushes update one repo; else ``<user>/<name>``."""
    export = get_export(db, export_id)
    queries = [("SELECT repo_id FROM hub_pushes WHERE export_id = ? ORDER BY id DESC LIMIT 1", [export_id])]
    if export["kind"] != "dataset":
        queries += [
            ("SELECT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id WHERE e.kind = ?"
             " AND e.policy_id = ? ORDER BY h.id DESC LIMIT 1", [export["kind"], export["policy_id"]]),
            ("SELECT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id WHERE e.kind = ?"
             " AND e.base_model = ? ORDER BY h.id DESC LIMIT 1", [export["kind"], export["base_model"]]),
        ]
    else:
        queries.append(("SELECT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id"
                        " WHERE e.kind = 'dataset' AND e.dataset_kind = ? ORDER BY h.id DESC LIMIT 1",
                        [export["dataset_kind"]]))
    for sql, params in queries:
        repo = db.scalar(sql, params)
        if repo:
            return repo
    base = (export["base_model"] or "studio").split("/")[-1]
    name = {"adapter": f"{base}-rlhf-studio-lora", "merged": f"{base}-rlhf-studio",
            "gguf": f"{base}-rlhf-studio-GGUF", "quantized": f"{base}-rlhf-studio-bnb-{export['dtype']}",
            "dataset": f"rlhf-studio-{export['dataset_kind']}"}[export["kind"]]
    return f"{username}/{name}" if username else name


def push_export(db: Database, export_id: int, user: Any, token: str, repo_id: str, private: bool = True,
                commit_message: str | None = None, progress: Progress | None = None, retries: int = 2,
                retry_wait: float = 1.0) -> PushResult:
    """Upload an export folder as one commit to a model (adapter, merged) or dataset repo.

    Steps: check the token (whoami), create the repo if needed (``exist_ok``), upload file by file
    (``preupload_lfs_files``: large files go to LFS/Xet storage here, with progress), then one commit of
    all files. Network errors, 5xx and conflicts are retried ``retries`` times; a failed push records
    nothing. The ``hub_pushes`` row is written only after the commit succeeded.
    """
    from huggingface_hub import CommitOperationAdd

    _require_admin(user)
    token = resolve_token(token)  # an empty field falls back to HF_TOKEN, never to a token file on disk
    export = get_export(db, export_id)
    folder = Path(export["path"])
    if not folder.is_dir():
        raise NotFound(f"The files of export {export_id} are gone ({folder})", hint="export it again")
    repo_id = (repo_id or "").strip()
    if not (REPO_ID.match(repo_id) or REPO_NAME.match(repo_id)):
        raise ValidationError(f"{repo_id!r} is not a Hub repo id",
                              hint="use owner/name (e.g. ada/my-adapter), or just a name for your own namespace")
    repo_type = "dataset" if export["kind"] == "dataset" else "model"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files) or 1
    message = commit_message or _commit_message(export)
    report = progress or (lambda fraction, text: None)
    api = _api(token)

    def attempt() -> Any:
        nonlocal repo_id
        report(0.0, "Checking the token")
        username = _call(lambda: api.whoami()["name"], token, "checking the token")
        if "/" not in repo_id:
            repo_id = f"{username}/{repo_id}"
        report(0.05, f"Creating {repo_type} repo {repo_id} (if needed)")
        _call(lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True),
              token, f"creating {repo_id}")
        operations, done = [], 0
        for path in files:
            name = path.relative_to(folder).as_posix()
            content: str | bytes = str(path)
            if name == "README.md":  # the card's usage snippet names the repo it lives in
                content = path.read_text(encoding="utf-8").replace('"REPO_ID"', f'"{repo_id}"').encode()
            op = CommitOperationAdd(path_in_repo=name, path_or_fileobj=content)
            report(0.1 + 0.8 * done / total, f"Uploading {op.path_in_repo} ({_size(path.stat().st_size)})")
            _call(lambda: api.preupload_lfs_files(repo_id, additions=[op], repo_type=repo_type),
                  token, f"uploading {op.path_in_repo}")
            operations.append(op)
            done += path.stat().st_size
        report(0.9, f"Committing {len(operations)} files")
        return _call(lambda: api.create_commit(repo_id, operations, commit_message=message, repo_type=repo_type),
                     token, f"committing to {repo_id}")

    attempts = 0
    while True:
        attempts += 1
        try:
            info = attempt()
            break
        except HubError as exc:
            if not exc.retryable or attempts > retries:
                raise
            report(0.0, f"{exc.message} — retrying ({attempts}/{retries})")
            time.sleep(retry_wait * 2 ** (attempts - 1))
    with db.transaction() as cur:
        cur.execute("INSERT INTO hub_pushes (export_id, repo_id, repo_type, private, endpoint, commit_url, commit_oid,"
                    " pushed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [export_id, repo_id, repo_type, private, hub_endpoint(), info.commit_url, info.oid,
                     getattr(user, "id", None)])
    report(1.0, f"Pushed to {repo_id}")
    return PushResult(export_id, repo_id, repo_type, info.commit_url, info.oid, attempts)


def adapter_manifest(db: Database) -> list[dict[str, Any]]:
    """Every pushed model export (adapter, merged, GGUF, bitsandbytes): version, base model, repo, commit URL and
    date, newest first."""
    rows = db.query(
        "SELECT e.kind, e.version, e.base_model, e.dtype, h.repo_id, h.private, h.commit_url, h.commit_oid,"
        " h.pushed_at AS date, e.id AS export_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id"
        " WHERE e.kind <> 'dataset' ORDER BY h.id DESC")
    for row in rows:
        row["date"] = row["date"].isoformat()
    return rows


# --- internals: Hub calls ------------------------------------------------------------------------------------


def _api(token: str) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token, library_name="rlhf-studio")


def _call(fn: Callable[[], Any], token: str, doing: str) -> Any:
    """Run one Hub call; map what can go wrong to a HubError whose text never contains the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        return fn()
    except OfflineModeIsEnabled:
        raise HubUnreachable(f"Offline mode is on: cannot reach the Hub while {doing}",
                             hint="unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) and restart the studio") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        detail = _scrub(getattr(exc, "server_message", None) or "", token)
        where = f" ({detail})" if detail else ""
        if status == 401 and not isinstance(exc, RepositoryNotFoundError):
            raise HubAuthError(f"The Hub rejected the token while {doing}{where}",
                               hint="the token is invalid or expired: create a new write token at "
                                    "huggingface.co/settings/tokens and use it (HF_TOKEN or the one-off field)") from None
        if status == 403:
            raise HubForbidden(f"The token may not do this: {doing}{where}",
                               hint="use a token with write access, and a namespace (user or org) you belong to") from None
        if status == 404 or isinstance(exc, RepositoryNotFoundError):
            raise HubNotFound(f"Not found on the Hub while {doing}{where}",
                              hint="check the repo id (owner/name) and that the token can see it") from None
        if status == 409:
            raise HubConflict(f"The Hub reported a conflict while {doing}{where}",
                              hint="someone else changed the repo at the same time, or the name is taken by "
                                   "another repo type; try again or pick another name") from None
        if status is not None and (status >= 500 or status in (408, 429)):
            raise HubUnreachable(f"The Hub is having trouble (HTTP {status}) while {doing}",
                                 hint="try again in a minute") from None
        raise HubError(f"The Hub answered HTTP {status} while {doing}{where}",
                       hint="check the repo id and options, then try again") from None
    except ValueError as exc:  # e.g. invalid README metadata, refused by validate-yaml
        raise HubError(f"The Hub refused the upload while {doing}: {_scrub(str(exc), token)}",
                       hint="fix the card metadata (license, base model id) and export again") from None
    except Exception as exc:
        if _is_network_error(exc):
            raise HubUnreachable(f"Cannot reach the Hub at {hub_endpoint()} while {doing} ({type(exc).__name__})",
                                 hint="check the network connection (and HF_ENDPOINT / proxy settings), then retry") from None
        raise


def _is_network_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "TimeoutException", "NetworkError"}) or isinstance(
        exc, (ConnectionError, TimeoutError))


def _scrub(text: str, token: str) -> str:
    text = text.replace(token, "***") if token else text
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text).strip()


def _commit_message(export: dict[str, Any]) -> str:
    if export["kind"] == "dataset":
        return f"RLHF Studio: {export['dataset_kind']} dataset ({export['rows']} rows)"
    what = "LoRA adapter" if export["kind"] == "adapter" else f"merged model ({export['dtype']})"
    return f"RLHF Studio: {what} of {export['version']}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# --- internals: folders, policies, runs ----------------------------------------------------------------------


def _register(db: Database, data_dir: Path | str, name: str, build: Callable[[Path], dict[str, Any]],
              user: Any) -> ExportResult:
    """Build into a hidden partial folder, then rename it and insert the row together: all or nothing."""
    root = exports_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        values = build(partial)
        with db.transaction() as cur:
            export_id = cur.execute(
                "INSERT INTO exports (kind, policy_id, version, base_model, dtype, dataset_kind, filters, rows,"
                " data_hash, path, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?) RETURNING id",
                [values["kind"], values.get("policy_id"), values.get("version"), values.get("base_model"),
                 values.get("dtype"), values.get("dataset_kind"), values.get("filters"), values.get("rows"),
                 values.get("data_hash"), getattr(user, "id", None)]).fetchone()[0]
            target = root / f"{export_id:04d}-{_slug(name)}"
            cur.execute("UPDATE exports SET path = ? WHERE id = ?", [str(target.resolve()), export_id])
            os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    files = tuple(sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()))
    return ExportResult(export_id, values["kind"], target, files)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "export"


def _require_admin(user: Any) -> None:
    if not getattr(user, "is_admin", False):
        raise PermissionDenied("Only admins can export and push", hint="ask an admin")


def _policy(db: Database, version: str) -> dict[str, Any]:
    rows = db.query("SELECT p.*, parent.name AS parent FROM policies p LEFT JOIN policies parent"
                    " ON parent.id = p.parent_id WHERE p.name = ? AND p.deleted_at IS NULL", [version])
    if not rows:
        raise NotFound(f"Policy version {version!r} does not exist (or was deleted)", hint="pick another version")
    policy = rows[0]
    if policy["algorithm"] is None:
        raise ValidationError("The base policy has nothing to export", hint="pick a trained version (v1, v2, ...)")
    if policy["algorithm"] == "reward":
        raise ValidationError(f"{version} is a reward model, not a chat policy", hint="pick a policy version")
    policy["config"] = json.loads(policy["config"]) if policy["config"] else {}
    policy["metrics"] = json.loads(policy["metrics"]) if policy["metrics"] else {}
    return policy


def _existing_dir(path: str, version: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise NotFound(f"The files of {version} are gone ({folder})",
                       hint="the run directory was moved or deleted; the version cannot be exported")
    return folder


def base_hub_id(spec: str | None) -> str | None:
    """The Hub id a base-model spec stands for, or None (local directory, tiny test model)."""
    from core.serving.models import HUB_ID

    if not spec or spec == "tiny":
        return None
    if spec in KNOWN_BASES:
        return KNOWN_BASES[spec]
    if "/" in spec and HUB_ID.match(spec) and not Path(spec).expanduser().exists():
        return spec
    return None


def _base_dir(policy: dict[str, Any], data_dir: Path | str) -> Path | str:
    from core.serving.models import resolve_model

    return resolve_model(policy["base_model"], Path(data_dir))


def _prepare(db: Database, user: Any, version: str, card: CardOptions | None,
             choice: tuple[str, str, tuple[str, ...]]) -> tuple[dict[str, Any], CardOptions, str | None]:
    """What every model export checks first: an admin, a known ``(what, value, choices)``, a live version; returns
    (policy, card options, the base model's Hub id or None)."""
    _require_admin(user)
    what, value, choices = choice
    if value not in choices:
        raise ValidationError(f"Unknown {what} {value!r}", hint=f"use one of {', '.join(choices)}")
    card = card or CardOptions()
    policy = _policy(db, version)
    return policy, card, card.base_model_id or base_hub_id(policy["base_model"])


def _merged_model(policy: dict[str, Any], version: str, data_dir: Path | str) -> tuple[Any, Any]:
    """(model, tokenizer) of a version in float32 with its adapter folded in; full fine-tunes load as they are."""
    import torch
    from transformers import AutoModelForCausalLM

    model_path = (policy["config"] or {}).get("model_path")
    if policy["adapter_path"]:
        from peft import PeftModel

        adapter_dir = _existing_dir(policy["adapter_path"], version)
        base = AutoModelForCausalLM.from_pretrained(str(_base_dir(policy, data_dir)), dtype=torch.float32)
        return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload(), \
            _tokenizer(adapter_dir, policy, data_dir)
    if not model_path:
        raise ValidationError(f"{version} has neither an adapter nor its own weights", hint="pick another version")
    source = _existing_dir(model_path, version)
    return AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32), _tokenizer(source, policy, data_dir)


def _write_run_files(db: Database, policy: dict[str, Any], card: CardOptions, base_id: str | None, out: Path,
                     form: str, precision: str | None = None, gguf: tuple[str, dict[str, Any]] | None = None) -> None:
    """What every model export carries besides weights: the run record, the curves image and the model card."""
    run = _run_info(db, policy)
    curves = _curves_png(run["metrics"])
    if curves:
        (out / CURVES_FILE).write_bytes(curves)
    (out / "training_config.json").write_text(json.dumps(run["record"], indent=2, default=str) + "\n",
                                              encoding="utf-8")
    card = replace(card, datasets=tuple(card.datasets) or _pushed_training_data(db, policy))
    (out / "README.md").write_text(_model_card(policy, run, card, base_id, form, precision, bool(curves), gguf),
                                   encoding="utf-8")


def _pushed_training_data(db: Database, policy: dict[str, Any]) -> tuple[str, ...]:
    """Hub dataset repos holding exactly this version's training rows (same data hash), for the card's datasets."""
    if not policy["data_hash"]:
        return ()
    rows = db.query("SELECT DISTINCT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id"
                    " WHERE e.kind = 'dataset' AND e.data_hash = ? ORDER BY h.repo_id", [policy["data_hash"]])
    return tuple(row["repo_id"] for row in rows)


def _tokenizer(folder: Path, policy: dict[str, Any], data_dir: Path | str) -> Any:
    """The version's tokenizer (saved with the adapter by training), else the base model's."""
    from transformers import AutoTokenizer

    source = folder if (folder / "tokenizer_config.json").is_file() else _base_dir(policy, data_dir)
    return AutoTokenizer.from_pretrained(str(source))


def _copy_adapter_weights(adapter_dir: Path, out: Path) -> None:
    safetensors = adapter_dir / "adapter_model.safetensors"
    if safetensors.is_file():
        shutil.copyfile(safetensors, out / "adapter_model.safetensors")
        return
    legacy = adapter_dir / "adapter_model.bin"
    if not legacy.is_file():
        raise NotFound(f"No adapter weights in {adapter_dir}", hint="the adapter directory is incomplete")
    import torch
    from safetensors.torch import save_file

    state = torch.load(legacy, map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"))


def _run_info(db: Database, policy: dict[str, Any]) -> dict[str, Any]:
    """The job record (hyperparameters, data hash, examples, filters) and metric series of a version."""
    record: dict[str, Any] = {"version": policy["name"], "algorithm": policy["algorithm"],
                              "parent": policy["parent"], "base_model": policy["base_model"],
                              "data_hash": policy["data_hash"], "job_id": policy["job_id"],
                              "hyperparams": {k: v for k, v in policy["config"].items()
                                              if k not in ("model_path", "reward_model_path")}}
    metrics: dict[str, list[tuple[int, float]]] = {}
    if policy["job_id"] is not None:
        job = db.query("SELECT config, created_at, finished_at FROM jobs WHERE id = ?", [policy["job_id"]])
        if job and job[0]["config"]:
            config = json.loads(job[0]["config"])
            record["hyperparams"] = config.get("hyperparams") or record["hyperparams"]
            for key in ("examples", "filters", "parent_policy"):
                if key in config:
                    record[key] = config[key]
            record["finished_at"] = job[0]["finished_at"].isoformat() if job[0]["finished_at"] else None
        for row in db.query("SELECT name, step, value FROM job_metrics WHERE job_id = ? AND value IS NOT NULL"
                            " ORDER BY name, step", [policy["job_id"]]):
            metrics.setdefault(row["name"], []).append((row["step"], row["value"]))
    record["final_metrics"] = policy["metrics"] or {}
    from core.compare.report import latest_report, public_view

    report = None
    if policy["algorithm"] != "reward":
        try:
            report = latest_report(db, policy["name"])
        except StudioError:
            report = None
    # A card is public: the report goes in without its example answers (other people's prompts).
    return {"record": record, "metrics": metrics, "report": public_view(report) if report else None,
            "safety": _safety_lines(db, policy)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --- cards ---------------------------------------------------------------------------------------------------

CARD_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "reward",
                "kl", "objective/kl", "learning_rate", "grad_norm")


def _model_card(policy: dict[str, Any], run: dict[str, Any], card: CardOptions, base_id: str | None, form: str,
                precision: str | None, has_curves: bool, gguf: tuple[str, dict[str, Any]] | None = None) -> str:
    """The README.md of a model export. Its usage snippet runs as written on another machine once the export is
    on the Hub (``REPO_ID`` becomes the repo at push time) and the base model has a Hub id."""
    from huggingface_hub import ModelCardData

    algorithm = policy["algorithm"]
    extra_tags = {"adapter": ["peft", "lora"], "merged": ["merged"], "gguf": ["gguf", "llama.cpp", "ollama"],
                  "quantized": ["bitsandbytes", "4-bit" if precision == "nf4" else "8-bit"]}[form]
    tags = ["trl", algorithm, "rlhf-studio", "rlhf"] + extra_tags
    data = ModelCardData(base_model=base_id, library_name={"adapter": "peft", "gguf": "gguf"}.get(form, "transformers"),
                         license=card.license, tags=list(dict.fromkeys(tags)),
                         datasets=list(card.datasets) or None, pipeline_tag="text-generation")
    if base_id and form != "adapter":
        data.base_model_relation = "quantized" if form in ("gguf", "quantized") else "finetune"
    record, base_name = run["record"], base_id or policy["base_model"]
    chat = ('\nmessages = [{"role": "user", "content": "Hello! Who are you?"}]\n'
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",\n"
            "                                       return_dict=True).to(model.device)\n"
            "output = model.generate(**inputs, max_new_tokens=64)\n"
            "print(tokenizer.decode(output[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))")
    language = "python"
    if form == "merged":
        title = f"{policy['name']} (merged, {precision})"
        what = (f"The LoRA adapter of policy version `{policy['name']}` merged into the weights of `{base_name}` "
                f"and saved as {precision} safetensors: a standalone model, no PEFT needed.")
        usage = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                 "model = AutoModelForCausalLM.from_pretrained(\"REPO_ID\")\n"
                 "tokenizer = AutoTokenizer.from_pretrained(\"REPO_ID\")" + chat)
    elif form == "quantized":
        title = f"{policy['name']} (bitsandbytes {precision})"
        what = (f"Policy version `{policy['name']}` merged into `{base_name}` and quantized with bitsandbytes "
                f"({precision}): loads quantized on a CUDA GPU, no PEFT needed.")
        usage = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                 "model = AutoModelForCausalLM.from_pretrained(\"REPO_ID\", device_map=\"auto\")\n"
                 "tokenizer = AutoTokenizer.from_pretrained(\"REPO_ID\")" + chat)
    elif form == "gguf":
        file_name, info = gguf or ("model.gguf", {})
        title = f"{policy['name']} (GGUF, {precision})"
        what = (f"Policy version `{policy['name']}` merged into `{base_name}` and written as one GGUF file "
                f"(`{file_name}`, {precision}) for llama.cpp, Ollama and LM Studio; the tokenizer and chat template "
                "are inside the file. `Modelfile` sets Ollama's template, stop tokens and sampling defaults.")
        language = "sh"
        usage = ("# Ollama, from a folder holding both files\n"
                 "ollama create my-model -f Modelfile && ollama run my-model\n\n"
                 "# llama.cpp\n"
                 f"llama-cli -hf \"REPO_ID\" -cnv    # or: llama-cli -m {file_name} -cnv\n\n"
                 "# transformers (dequantizes to float32)\n"
                 "python -c 'from transformers import AutoModelForCausalLM; "
                 f"AutoModelForCausalLM.from_pretrained(\"REPO_ID\", gguf_file=\"{file_name}\")'")
        if info.get("tensor_types"):
            what += " Tensor types: " + ", ".join(f"{n} {k}" for k, n in sorted(info["tensor_types"].items())) + "."
    else:
        title = f"{policy['name']} (LoRA adapter)"
        what = (f"A LoRA adapter (PEFT) for `{base_name}`: policy version `{policy['name']}`, trained with "
                f"**{algorithm.upper()}** (TRL) on human feedback collected in RLHF Studio. Only the adapter is "
                "in this repo; load it onto the base model.")
        usage = ("from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                 f"base = AutoModelForCausalLM.from_pretrained(\"{base_name}\")\n"
                 "model = PeftModel.from_pretrained(base, \"REPO_ID\")\n"
                 "tokenizer = AutoTokenizer.from_pretrained(\"REPO_ID\")" + chat)
    if not base_id:
        what += (f"\n\n> Note: the base model `{base_name}` has no Hub id here, so this export names it by its local "
                 "path and loads only where that path exists. Export again with the base model's Hub id to fix it.")
    lines = [f"---\n{data.to_yaml()}\n---", "", f"# {title}", "", what, ""]
    lines += ["## Usage", "", f"```{language}", usage, "```", "",
              "## Provenance", "",
              f"- algorithm: `{algorithm}` (TRL), parent version: `{policy['parent'] or 'base'}`",
              f"- base model: `{base_name}`",
              f"- training data hash (sha256 of the frozen rows): `{policy['data_hash'] or 'n/a'}`"]
    if "examples" in record:
        lines.append(f"- training examples: {record['examples']}")
    if record.get("filters"):
        lines.append(f"- data filters: `{json.dumps(record['filters'], sort_keys=True, default=str)}`")
    lines.append(f"- created: {policy['created_at'].isoformat() if hasattr(policy['created_at'], 'isoformat') else policy['created_at']}")
    lines += ["", "## Training configuration", "", "| parameter | value |", "|---|---|"]
    for key, value in sorted((record.get("hyperparams") or {}).items()):
        lines.append(f"| `{key}` | `{json.dumps(value, default=str)}` |")
    lines += ["", "## Metrics", ""]
    series = run["metrics"]
    if series:
        lines += ["| metric | first | last | min | max | steps |", "|---|---|---|---|---|---|"]
        names = [n for n in CARD_METRICS if n in series] + sorted(n for n in series if n not in CARD_METRICS)
        for name in names:
            values = [v for _, v in series[name]]
            lines.append(f"| {name} | {values[0]:.4g} | {values[-1]:.4g} | {min(values):.4g} | {max(values):.4g}"
                         f" | {len(values)} |")
    else:
        lines.append("No metrics were recorded for this version.")
    if has_curves:
        lines += ["", f"![Loss, reward and KL during training]({CURVES_FILE})"]
    lines += ["", "## What changed", ""] + _report_lines(run.get("report"), policy)
    lines += ["## Safety", ""] + run.get("safety", [])
    lines += ["", "Exported by RLHF Studio; `training_config.json` holds the full run record.", ""]
    return "\n".join(lines)


def _report_lines(report: dict[str, Any] | None, policy: dict[str, Any]) -> list[str]:
    """The card's "what changed" section: the verdict and figures of the version against its parent."""
    if not report:
        return [f"No \"what changed\" report was computed for `{policy['name']}` (RLHF Studio computes one after "
                "every training job).", ""]
    m = report["metrics"]

    def pair(name: str, fmt: str) -> str:
        old, new = m.get(f"{name}_against"), m.get(f"{name}_version")
        return "n/a" if new is None else f"{fmt.format(old)} -> {fmt.format(new)}" if old is not None else fmt.format(new)

    lines = [f"**{report['summary']}**", "",
             f"Measured against `{report['against']}` on {m['held_out_pairs']} labeled pairs and {m.get('prompts', 0)} "
             "prompts that neither version was trained on.", "",
             "| figure | value |", "|---|---|",
             f"| held-out preference accuracy | {pair('accuracy', '{:.2f}')} |",
             f"| KL to `{report['against']}` (nats per token) | "
             f"{'n/a' if m.get('kl_per_token') is None else format(m['kl_per_token'], '.3f')} |",
             f"| answer length (tokens) | {pair('length', '{:.0f}')} |",
             f"| refusal rate | {pair('refusal', '{:.0%}')} |",
             f"| diversity (distinct-2) | {pair('distinct2', '{:.2f}')} |"]
    if m.get("win_rate") is not None:
        lines.append(f"| win rate judged by `{m['reward_model']}` | {m['win_rate']:.0%} |")
    lines += [f"\n> warning: {w}" for w in report.get("warnings", [])]
    return lines + [""]


def _safety_lines(db: Database, policy: dict[str, Any]) -> list[str]:
    """The card's safety section: the latest red-team evaluation (rates only, no quoted text) and the change
    against the parent when both were evaluated."""
    from core.compare.safety import latest_safety, percent, safety_change

    run = latest_safety(db, policy["name"])
    if run is None:
        return ["No safety evaluation was run for this version (RLHF Studio: `launch.py safety-eval`).", ""]
    lines = [f"On {run['prompts']} red-team prompts written for RLHF Studio ({run['harmful']} harmful requests, "
             f"{run['benign']} benign look-alikes; prompt set `{run['prompt_set_hash'][:12]}`), judged by "
             f"{run['judged_by']}:", "",
             f"- unsafe-answer rate: {percent(run['unsafe_rate'])}",
             f"- over-refusal rate: {percent(run['over_refusal_rate'])}"]
    change = safety_change(db, policy["name"])
    if change:
        lines.append(f"- against `{change['against']}`: " + ("; ".join(change["reasons"]) if change["worse"]
                                                             else "not less safe"))
    return lines + [""]


def _dataset_card(kind: str, rows: list[dict[str, Any]], skipped: dict[str, Any], data_hash: str,
                  filters: dict[str, Any], formats: tuple[str, ...], card: CardOptions, name: str | None) -> str:
    from huggingface_hub import DatasetCardData

    n = len(rows)
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    trainers = {"preference": "dpo", "reward": "reward-modeling", "unpaired": "kto", "sft": "sft"}[kind]
    data_file = "data/train.parquet" if "parquet" in formats else "data/train.jsonl"
    meta = DatasetCardData(license=card.license, task_categories=["text-generation"], size_categories=[size],
                           tags=["trl", trainers, "rlhf", "human-feedback", "rlhf-studio"],
                           pretty_name=name or f"RLHF Studio {kind} data",
                           configs=[{"config_name": "default",
                                     "data_files": [{"split": "train", "path": data_file}]}])
    columns = {"preference": "`prompt`, `chosen`, `rejected` (conversational: lists of {role, content})",
               "reward": "`prompt`, `chosen`, `rejected`, `margin` (weighted rating gap, >= 0)",
               "unpaired": "`prompt`, `completion`, `label` (True = desirable)",
               "sft": "`messages` (the conversation ending with the answer it should have been)"}[kind]
    lines = [f"---\n{meta.to_yaml()}\n---", "", f"# {name or f'RLHF Studio {kind} data'}", "",
             f"Human feedback collected in RLHF Studio, as a TRL **{kind}** dataset ({n} rows).", "",
             f"- columns: {columns}",
             f"- files: {', '.join('data/train.' + f for f in formats)}",
             f"- data hash (sha256 of the rows): `{data_hash}`",
             f"- filters: `{json.dumps(filters, sort_keys=True, default=str)}`",
             f"- skipped labels: `{json.dumps(skipped, sort_keys=True)}`",
             f"- exported: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", "",
             "```python", "from datasets import load_dataset", "", "ds = load_dataset(\"REPO_ID\", split=\"train\")",
             "```", ""]
    return "\n".join(lines)


# --- the training-curves image (Pillow only: no plotting dependency) -----------------------------------------

_PANELS = (("Loss", ("loss",)),
           ("Reward", ("rewards/chosen", "rewards/rejected", "rewards/margins", "reward")),
           ("KL", ("kl", "objective/kl")))
_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189))


def _curves_png(series: dict[str, list[tuple[int, float]]], width: int = 1200, height: int = 360) -> bytes | None:
    """Loss, reward and KL against the step, one panel each, as a PNG; None without any of them."""
    from PIL import Image, ImageDraw, ImageFont

    panels = [(title, [(n, series[n]) for n in names if len(series.get(n, ())) > 0]) for title, names in _PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    panel_w = width // len(panels)
    for index, (title, lines) in enumerate(panels):
        left, top = index * panel_w + 60, 34
        right, bottom = (index + 1) * panel_w - 16, height - 60
        steps = [s for _, points in lines for s, _ in points]
        values = [v for _, points in lines for _, v in points]
        x0, x1 = min(steps), max(steps)
        y0, y1 = min(values), max(values)
        if x1 == x0:
            x1 = x0 + 1
        if y1 == y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        draw.text(((left + right) // 2, 10), title, fill="black", font=font, anchor="mt")
        draw.rectangle((left, top, right, bottom), outline=(180, 180, 180))
        for frac in (0.0, 0.5, 1.0):
            y = bottom - frac * (bottom - top)
            draw.line((left, y, right, y), fill=(235, 235, 235))
            draw.text((left - 6, y), f"{y0 + frac * (y1 - y0):.3g}", fill="black", font=font, anchor="rm")
        draw.text((left, bottom + 6), str(x0), fill="black", font=font, anchor="lt")
        draw.text((right, bottom + 6), str(x1), fill="black", font=font, anchor="rt")
        draw.text(((left + right) // 2, bottom + 6), "step", fill="black", font=font, anchor="mt")
        for k, (name, points) in enumerate(lines):
            color = _COLORS[k % len(_COLORS)]
            xy = [(left + (s - x0) / (x1 - x0) * (right - left), bottom - (v - y0) / (y1 - y0) * (bottom - top))
                  for s, v in points]
            if len(xy) == 1:
                draw.ellipse((xy[0][0] - 3, xy[0][1] - 3, xy[0][0] + 3, xy[0][1] + 3), fill=color)
            else:
                draw.line(xy, fill=color, width=2)
            lx, ly = left + 4 + 150 * (k % 2), bottom + 24 + 14 * (k // 2)
            draw.line((lx, ly + 7, lx + 14, ly + 7), fill=color, width=2)
            draw.text((lx + 18, ly), name, fill=color, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
