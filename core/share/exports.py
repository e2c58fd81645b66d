"""Local exports: policy versions and labels as complete folders under ``<data-dir>/exports/<id>-<name>/``.

Each folder is listed in the ``exports`` table, written only once the folder is complete (built in a hidden
partial folder, then renamed and registered in one transaction), so nothing is half-registered:

``adapter``    the LoRA adapter of a policy version in standard PEFT layout (``adapter_config.json``,
               ``adapter_model.safetensors``, tokenizer files) with a model card generated from the run
               (core.share.cards) and a loss / reward / KL plot (core.share.curves). Loads with
               ``PeftModel.from_pretrained(base, folder_or_repo)``.
``merged``     the adapter merged into its base weights (``merge_and_unload``), saved as safetensors in
               float32, float16 or bfloat16, with tokenizer and card. A fully fine-tuned version is
               converted the same way.
``gguf``       the merged version as one GGUF file (core.share.gguf_export) with an Ollama ``Modelfile``.
``quantized``  the merged version quantized with bitsandbytes (CUDA only).
``dataset``    a training set of the labels (a builder of core.data.trainsets), or the exact rows a version was
               trained on, as ``data/train.parquet`` and/or ``data/train.jsonl`` with a dataset card.

What a version is made of (its adapter, base model, tokenizer) is read by core.share.versions; pushing a
folder to the Hub is core.share.hub. Only admins export.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import NotFound, PermissionDenied, ValidationError
from core.serving.policies import Version, run_dir_of
from core.share.cards import CardOptions, dataset_card, model_card, pushed_training_data, run_info
from core.share.curves import CURVES_FILE, curves_png
from core.share.versions import base_hub_id, existing_dir, load_tokenizer, merged_model, trained_version
from core.training import rundir
from storage.db import Database, one_value

EXPORTS_SUBDIR = "exports"
DTYPES = ("float32", "float16", "bfloat16")
QUANTIZED_BITS = ("nf4", "int8")
DATASET_FORMATS = ("parquet", "jsonl")


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: its row id, kind, folder and the files in it (relative to the folder)."""

    id: int
    kind: str
    path: Path
    files: tuple[str, ...]


MODEL_KINDS = ("adapter", "merged", "gguf", "quantized")  # exports of a version's weights: the release gate applies


def exports_dir(data_dir: Path | str) -> Path:
    """Where every export folder lives: under the data dir, next to the database that lists them."""
    return Path(data_dir) / EXPORTS_SUBDIR


def exportable_versions(db: Database) -> list[dict[str, Any]]:
    """Live policy versions with weights of their own: an adapter, or full weights (``model_path``)."""
    rows = db.query(
        "SELECT id, name, algorithm, base_model, adapter_path, config, created_at FROM policies"
        " WHERE deleted_at IS NULL AND algorithm IS NOT NULL AND algorithm <> 'reward' ORDER BY id"
    )
    out = []
    for row in rows:
        config = json.loads(row["config"]) if row["config"] else {}
        if row["adapter_path"] or config.get("model_path"):
            out.append({**row, "config": config, "has_adapter": bool(row["adapter_path"])})
    return out


def export_adapter(
    db: Database, data_dir: Path | str, version: str, user: Any, card: CardOptions | None = None
) -> ExportResult:
    """The version's LoRA adapter in standard PEFT layout, with tokenizer, model card and training curves."""
    require_admin(user)
    card = card or CardOptions()
    policy = trained_version(db, version)
    if not policy["adapter_path"]:
        raise ValidationError(
            f"{version} has no LoRA adapter (it was fully fine-tuned)", hint="export it as a merged model instead"
        )
    adapter_dir = existing_dir(policy["adapter_path"], version)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise NotFound(f"{adapter_dir} has no adapter_config.json", hint="the adapter directory is incomplete")
    base_id = card.base_model_id or base_hub_id(policy["base_model"])

    def build(out: Path) -> dict[str, Any]:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        if base_id:
            config["base_model_name_or_path"] = base_id  # resolvable by AutoPeftModel outside this machine
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _copy_adapter_weights(adapter_dir, out)
        load_tokenizer(adapter_dir, policy, data_dir).save_pretrained(str(out))
        _write_run_files(db, policy, card, base_id, out, "adapter")
        return {
            "kind": "adapter",
            "policy_id": policy["id"],
            "version": version,
            "base_model": base_id or policy["base_model"],
            "data_hash": policy["data_hash"],
        }

    return _register(db, data_dir, f"{version}-adapter", build, user)


def export_merged(
    db: Database, data_dir: Path | str, version: str, user: Any, dtype: str = "float32", card: CardOptions | None = None
) -> ExportResult:
    """Base + adapter merged into plain weights (safetensors) in ``dtype``; full fine-tunes are converted."""
    policy, card, base_id = _prepare(db, user, version, card, ("dtype", dtype, DTYPES))

    def build(out: Path) -> dict[str, Any]:
        def merge() -> None:
            import torch

            model, tokenizer = merged_model(policy, version, data_dir)
            model = model.to(getattr(torch, dtype))
            if base_id:
                model.config._name_or_path = base_id
            model.save_pretrained(str(out), safe_serialization=True)
            tokenizer.save_pretrained(str(out))

        from core.serving.generate import in_short_thread

        in_short_thread(merge, name="studio-export")
        _write_run_files(db, policy, card, base_id, out, "merged", dtype)
        return {
            "kind": "merged",
            "policy_id": policy["id"],
            "version": version,
            "base_model": base_id or policy["base_model"],
            "dtype": dtype,
            "data_hash": policy["data_hash"],
        }

    return _register(db, data_dir, f"{version}-merged-{dtype}", build, user)


def export_gguf(
    db: Database,
    data_dir: Path | str,
    version: str,
    user: Any,
    quant: str = "q8_0",
    card: CardOptions | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExportResult:
    """The merged version as one GGUF file (core.share.gguf_export) with an Ollama ``Modelfile`` and a card: runs in
    llama.cpp, Ollama and LM Studio; transformers loads it back with ``gguf_file=``."""
    from core.serving.generate import SamplingParams, in_short_thread
    from core.share.gguf_export import GGUF_TYPES, modelfile, write_gguf

    policy, card, base_id = _prepare(db, user, version, card, ("GGUF type", quant, GGUF_TYPES))
    file_name = f"{_slug(version)}-{quant}.gguf"

    def build(out: Path) -> dict[str, Any]:
        def convert() -> dict[str, Any]:
            model, tokenizer = merged_model(policy, version, data_dir)
            title = f"{(base_id or 'model').split('/')[-1]} {version} (RLHF Studio)"
            info = write_gguf(model, tokenizer, out / file_name, quant, title, progress)
            sampling = SamplingParams()
            (out / "Modelfile").write_text(
                modelfile(file_name, tokenizer, sampling.temperature, sampling.top_p, sampling.max_new_tokens),
                encoding="utf-8",
            )
            return info

        info = in_short_thread(convert, name="studio-export")
        _write_run_files(db, policy, card, base_id, out, "gguf", quant, gguf=(file_name, info))
        return {
            "kind": "gguf",
            "policy_id": policy["id"],
            "version": version,
            "base_model": base_id or policy["base_model"],
            "dtype": quant,
            "data_hash": policy["data_hash"],
        }

    return _register(db, data_dir, f"{version}-{quant}-gguf", build, user)


def export_quantized(
    db: Database, data_dir: Path | str, version: str, user: Any, bits: str = "nf4", card: CardOptions | None = None
) -> ExportResult:
    """The merged version quantized with bitsandbytes (4-bit NF4 or 8-bit), saved so ``from_pretrained`` loads it
    quantized. bitsandbytes quantizes on CUDA: elsewhere this refuses and points to GGUF, which is built for CPUs."""
    import torch

    policy, card, base_id = _prepare(db, user, version, card, ("bitsandbytes type", bits, QUANTIZED_BITS))
    if not torch.cuda.is_available():
        raise ValidationError(
            "bitsandbytes quantization needs a CUDA GPU, and this machine has none",
            hint="export GGUF q8_0 or q4_0 instead (it is made for CPUs), or run this export on a machine with a GPU",
            code="needs_cuda",
        )

    def build(out: Path) -> dict[str, Any]:
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        merged_dir = out / ".merged"
        model, tokenizer = merged_model(policy, version, data_dir)
        model.save_pretrained(str(merged_dir), safe_serialization=True)
        del model
        quantization = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
            if bits == "nf4"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        quantized = AutoModelForCausalLM.from_pretrained(
            str(merged_dir), quantization_config=quantization, device_map={"": 0}
        )
        if base_id:
            quantized.config._name_or_path = base_id
        quantized.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
        shutil.rmtree(merged_dir)
        _write_run_files(db, policy, card, base_id, out, "quantized", bits)
        return {
            "kind": "quantized",
            "policy_id": policy["id"],
            "version": version,
            "base_model": base_id or policy["base_model"],
            "dtype": bits,
            "data_hash": policy["data_hash"],
        }

    return _register(db, data_dir, f"{version}-{bits}", build, user)


def export_dataset(
    db: Database,
    data_dir: Path | str,
    kind: str,
    user: Any,
    filters: Any = None,
    formats: Iterable[str] = DATASET_FORMATS,
    card: CardOptions | None = None,
    name: str | None = None,
) -> ExportResult:
    """A training set built from the labels (a dataset kind of core.data.kinds) as parquet and/or JSONL, with a
    dataset card."""
    from core.data import kinds, trainsets
    from core.data.filters import Filters, filters_from_dict
    from core.data.job_data import content_hash

    require_admin(user)
    card = card or CardOptions()
    formats = tuple(dict.fromkeys(formats))
    dataset_kind = kinds.exportable_kind(kind)
    if not formats or set(formats) - set(DATASET_FORMATS):
        raise ValidationError(
            f"Formats must be among {', '.join(DATASET_FORMATS)}, got {list(formats)}",
            hint="pick parquet, jsonl or both",
        )
    filters = filters if isinstance(filters, Filters) else filters_from_dict(filters)
    built = dataset_kind.rows(db, filters)
    if not built.rows:
        raise ValidationError(
            f"No {kind} rows match these filters (skipped: {built.stats['skipped'] or 'none'})",
            hint="label more, or loosen the filters",
        )
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
        (out / "README.md").write_text(
            dataset_card(kind, built.rows, built.stats["skipped"], data_hash, filters_json, formats, card, name),
            encoding="utf-8",
        )
        return {
            "kind": "dataset",
            "dataset_kind": kind,
            "filters": json.dumps(filters_json),
            "rows": len(built.rows),
            "data_hash": data_hash,
        }

    return _register(db, data_dir, f"{name or kind}-dataset", build, user)


def export_training_data(
    db: Database, data_dir: Path | str, version: str, user: Any, card: CardOptions | None = None
) -> ExportResult:
    """The exact rows a version was trained on (frozen in its run directory when the job started), as a dataset.

    It carries the version's data hash, so once it is pushed, the model cards of that version name its repo in
    ``datasets`` by themselves."""
    import pyarrow.parquet as pq

    from core.data.kinds import EXPORTABLE
    from core.training import ALGORITHMS

    require_admin(user)
    card = card or CardOptions()
    policy = trained_version(db, version)
    kind = ALGORITHMS[str(policy["algorithm"])].dataset_kind  # a trained version: never the base's None
    run_dir = run_dir_of(db, policy)
    train = rundir.train_data_path(run_dir) if run_dir else None
    if train is None or not train.is_file():
        raise NotFound(
            f"The training data of {version} is gone",
            hint="it lives in the run directory of its job; export the labels with filters instead",
        )
    if kind not in EXPORTABLE:
        raise ValidationError(
            f"{version} was trained on {kind}, which has no dataset card format",
            hint="export the labels with filters instead",
        )
    rows = pq.read_table(train).to_pylist()

    def build(out: Path) -> dict[str, Any]:
        (out / "data").mkdir()
        shutil.copyfile(train, out / "data" / "train.parquet")
        with open(out / "data" / "train.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        name = f"Training data of {version}"
        (out / "README.md").write_text(
            dataset_card(
                kind, rows, {}, policy["data_hash"] or "n/a", {"version": version}, DATASET_FORMATS, card, name
            ),
            encoding="utf-8",
        )
        return {
            "kind": "dataset",
            "dataset_kind": kind,
            "version": version,
            "policy_id": policy["id"],
            "filters": json.dumps({"version": version}),
            "rows": len(rows),
            "data_hash": policy["data_hash"],
        }

    return _register(db, data_dir, f"{version}-training-data", build, user)


def list_exports(db: Database) -> list[dict[str, Any]]:
    """Every export, newest first, with its latest push (repo, commit URL) if any."""
    rows = db.query(
        "SELECT e.id, e.kind, e.version, e.base_model, e.dtype, e.dataset_kind, e.rows, e.data_hash, e.path,"
        " e.created_at, h.repo_id, h.repo_type, h.private, h.commit_url, h.pushed_at"
        " FROM exports e LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY export_id ORDER BY id DESC) AS n"
        " FROM hub_pushes) h ON h.export_id = e.id AND h.n = 1 ORDER BY e.id DESC"
    )
    for row in rows:
        for key in ("created_at", "pushed_at"):
            row[key] = row[key].isoformat() if row[key] else None
    return rows


def get_export(db: Database, export_id: int) -> dict[str, Any]:
    """The ``exports`` row of one export, or NotFound."""
    rows = db.query("SELECT * FROM exports WHERE id = ?", [export_id])
    if not rows:
        raise NotFound(f"Export {export_id} does not exist", hint="pick one from the list of exports")
    return rows[0]


def export_files(db: Database, export_id: int) -> list[dict[str, Any]]:
    """Every file an export wrote, relative to its folder, with its size: the Export page lists them so nobody has
    to open the folder to see what they got (a GGUF export is the .gguf, a Modelfile, a card and the run record)."""
    folder = _export_folder(db, export_id)
    return [
        {
            "file": path.relative_to(folder).as_posix(),
            "size": human_size(path.stat().st_size),
            "bytes": path.stat().st_size,
        }
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
    ]


def ollama_usage(db: Database, export_id: int) -> dict[str, str] | None:
    """For a GGUF export: its Modelfile's text and the ``ollama create`` command that registers it (None for other
    kinds, or when the Modelfile is gone)."""
    from core.share.gguf_export import ollama_create_command, ollama_model_name

    export = get_export(db, export_id)
    modelfile = Path(export["path"]) / "Modelfile"
    if export["kind"] != "gguf" or not modelfile.is_file():
        return None
    name = ollama_model_name(export["version"] or "model", export["dtype"] or "gguf")
    return {
        "modelfile": modelfile.read_text(encoding="utf-8"),
        "name": name,
        "command": ollama_create_command(modelfile, name),
    }


def human_size(n_bytes: int) -> str:
    """``1.5 MB``: powers of 1000, as file managers and the Hub show sizes."""
    size = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def zip_export(db: Database, export_id: int) -> tuple[str, bytes]:
    """(file name, zip bytes) of an export folder; weights are stored, text is deflated."""
    folder = _export_folder(db, export_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            compress = (
                zipfile.ZIP_STORED if path.suffix in (".safetensors", ".parquet", ".png") else zipfile.ZIP_DEFLATED
            )
            zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}", compress_type=compress)
    return f"{folder.name}.zip", buffer.getvalue()


def _export_folder(db: Database, export_id: int) -> Path:
    folder = Path(get_export(db, export_id)["path"])
    if not folder.is_dir():
        raise NotFound(f"The files of export {export_id} are gone ({folder})", hint="export it again")
    return folder


def require_admin(user: Any) -> None:
    """Exports copy weights and everyone's labels out of the studio, so only admins export and push."""
    if not getattr(user, "is_admin", False):
        raise PermissionDenied("Only admins can export and push", hint="ask an admin")


def _prepare(
    db: Database, user: Any, version: str, card: CardOptions | None, choice: tuple[str, str, tuple[str, ...]]
) -> tuple[Version, CardOptions, str | None]:
    """What every model export checks first: an admin, a known ``(what, value, choices)``, a live version; returns
    (policy, card options, the base model's Hub id or None)."""
    require_admin(user)
    what, value, choices = choice
    if value not in choices:
        raise ValidationError(f"Unknown {what} {value!r}", hint=f"use one of {', '.join(choices)}")
    card = card or CardOptions()
    policy = trained_version(db, version)
    return policy, card, card.base_model_id or base_hub_id(policy["base_model"])


def _register(
    db: Database, data_dir: Path | str, name: str, build: Callable[[Path], dict[str, Any]], user: Any
) -> ExportResult:
    """Build into a hidden partial folder, then rename it and insert the row together: all or nothing."""
    root = exports_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        values = build(partial)
        with db.transaction() as cur:
            export_id = one_value(
                cur.execute(
                    "INSERT INTO exports (kind, policy_id, version, base_model, dtype, dataset_kind, filters, rows,"
                    " data_hash, path, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?) RETURNING id",
                    [
                        values["kind"],
                        values.get("policy_id"),
                        values.get("version"),
                        values.get("base_model"),
                        values.get("dtype"),
                        values.get("dataset_kind"),
                        values.get("filters"),
                        values.get("rows"),
                        values.get("data_hash"),
                        getattr(user, "id", None),
                    ],
                )
            )
            target = root / f"{export_id:04d}-{_slug(name)}"
            cur.execute("UPDATE exports SET path = ? WHERE id = ?", [str(target.resolve()), export_id])
            os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    files = tuple(sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()))
    return ExportResult(export_id, values["kind"], target, files)


def _write_run_files(
    db: Database,
    policy: Version,
    card: CardOptions,
    base_id: str | None,
    out: Path,
    form: str,
    precision: str | None = None,
    gguf: tuple[str, dict[str, Any]] | None = None,
) -> None:
    """What every model export carries besides weights: the run record, the curves image and the model card."""
    run = run_info(db, policy)
    curves = curves_png(run["metrics"])
    if curves:
        (out / CURVES_FILE).write_bytes(curves)
    (out / "training_config.json").write_text(json.dumps(run["record"], indent=2, default=str) + "\n", encoding="utf-8")
    card = replace(card, datasets=tuple(card.datasets) or pushed_training_data(db, policy))
    (out / "README.md").write_text(
        model_card(policy, run, card, base_id, form, precision, bool(curves), gguf), encoding="utf-8"
    )


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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "export"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
