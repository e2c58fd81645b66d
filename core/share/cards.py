"""Model and dataset cards (README.md) of exports, and the run record they are written from.

A model card carries YAML metadata (base_model, library_name, tags with trl and the algorithm, datasets,
license), a usage snippet that runs as written once the export is on the Hub, provenance (algorithm, parent,
data hash), the training configuration, a metrics table, the training-curves image (core.share.curves), the
"what changed" report (core.compare.report) and the latest safety evaluation (core.compare.safety). A card is
public: it quotes no one's prompts or answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from core.errors import StudioError
from core.serving.policies import Version
from core.share.curves import CURVES_FILE
from core.share.lineage import card_lines
from storage.db import Database

LICENSES = ("apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "openrail", "other")
CARD_METRICS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "reward",
    "kl",
    "objective/kl",
    "learning_rate",
    "grad_norm",
)


@dataclass
class CardOptions:
    """What the generated model / dataset card says beyond what the run records."""

    license: str = field(
        default="apache-2.0",
        metadata={
            "help": "Licence in the card's metadata. The base model's licence still applies to its weights.",
            "choices": LICENSES,
        },
    )
    base_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the base model for the card's base_model (detected for the default model and Hub "
            "ids; needed for a local base directory)."
        },
    )
    datasets: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Hub dataset repos the training data was published to (the card's `datasets`), comma-separated."
        },
    )


def run_info(db: Database, policy: Version) -> dict[str, Any]:
    """The job record (hyperparameters, data hash, examples, filters) and metric series of a version."""
    record: dict[str, Any] = {
        "version": policy["name"],
        "algorithm": policy["algorithm"],
        "parent": policy["parent"],
        "base_model": policy["base_model"],
        "data_hash": policy["data_hash"],
        "job_id": policy["job_id"],
        "hyperparams": {k: v for k, v in policy["config"].items() if k not in ("model_path", "reward_model_path")},
    }
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
        for row in db.query(
            "SELECT name, step, value FROM job_metrics WHERE job_id = ? AND value IS NOT NULL ORDER BY name, step",
            [policy["job_id"]],
        ):
            metrics.setdefault(row["name"], []).append((row["step"], row["value"]))
    record["final_metrics"] = policy["metrics"] or {}
    from core.compare.report import latest_report, public_view

    report = None
    if policy["algorithm"] != "reward":
        try:
            report = latest_report(db, policy["name"], thorough_first=True)
        except StudioError:
            report = None
    # A card is public: the report goes in without its example answers (other people's prompts).
    chain = None
    if policy["algorithm"] != "reward":
        from core.share.lineage import lineage

        try:
            chain = lineage(db, policy["name"])
        except StudioError:
            chain = None
    benchmarks = None
    if policy["algorithm"] != "reward":
        from core.compare.benchmarks import latest_comparison

        try:
            benchmarks = latest_comparison(db, policy["name"])
        except StudioError:
            benchmarks = None
    return {
        "record": record,
        "metrics": metrics,
        "report": public_view(report) if report else None,
        "safety": safety_lines(db, policy),
        "lineage": chain,
        "benchmarks": benchmarks,
    }


def pushed_training_data(db: Database, policy: Version) -> tuple[str, ...]:
    """Hub dataset repos holding exactly this version's training rows (same data hash), for the card's datasets."""
    if not policy["data_hash"]:
        return ()
    rows = db.query(
        "SELECT DISTINCT h.repo_id FROM hub_pushes h JOIN exports e ON e.id = h.export_id"
        " WHERE e.kind = 'dataset' AND e.data_hash = ? ORDER BY h.repo_id",
        [policy["data_hash"]],
    )
    return tuple(row["repo_id"] for row in rows)


def model_card(
    policy: Version,
    run: dict[str, Any],
    card: CardOptions,
    base_id: str | None,
    form: str,
    precision: str | None,
    has_curves: bool,
    gguf: tuple[str, dict[str, Any]] | None = None,
) -> str:
    """The README.md of a model export. Its usage snippet runs as written on another machine once the export is
    on the Hub (``REPO_ID`` becomes the repo at push time) and the base model has a Hub id."""
    from huggingface_hub import ModelCardData

    algorithm = str(policy["algorithm"])  # a trained version (trained_version refuses the base)
    extra_tags = {
        "adapter": ["peft", "lora"],
        "merged": ["merged"],
        "gguf": ["gguf", "llama.cpp", "ollama"],
        "quantized": ["bitsandbytes", "4-bit" if precision == "nf4" else "8-bit"],
    }[form]
    tags = ["trl", algorithm, "rlhf-studio", "rlhf"] + extra_tags
    data = ModelCardData(
        base_model=base_id,
        library_name={"adapter": "peft", "gguf": "gguf"}.get(form, "transformers"),
        license=card.license,
        tags=list(dict.fromkeys(tags)),
        datasets=list(card.datasets) or None,
        pipeline_tag="text-generation",
    )
    if run.get("benchmarks"):  # model-index: the Hub shows these scores on the model page
        data.model_name = f"{policy['name']} ({form})"
        data.eval_results = eval_results(run["benchmarks"])
    if base_id and form != "adapter":
        # ModelCardData keeps any extra field (huggingface_hub does not declare this one)
        data.base_model_relation = "quantized" if form in ("gguf", "quantized") else "finetune"  # type: ignore[attr-defined]
    record, base_name = run["record"], base_id or policy["base_model"]
    chat = (
        '\nmessages = [{"role": "user", "content": "Hello! Who are you?"}]\n'
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",\n'
        "                                       return_dict=True).to(model.device)\n"
        "output = model.generate(**inputs, max_new_tokens=64)\n"
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))'
    )
    language = "python"
    if form == "merged":
        title = f"{policy['name']} (merged, {precision})"
        what = (
            f"The LoRA adapter of version `{policy['name']}` merged into the weights of `{base_name}` "
            f"and saved as {precision} safetensors: a standalone model, no PEFT needed."
        )
        usage = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("REPO_ID")\n'
            'tokenizer = AutoTokenizer.from_pretrained("REPO_ID")' + chat
        )
    elif form == "quantized":
        title = f"{policy['name']} (bitsandbytes {precision})"
        what = (
            f"Version `{policy['name']}` merged into `{base_name}` and quantized with bitsandbytes "
            f"({precision}): loads quantized on a CUDA GPU, no PEFT needed."
        )
        usage = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("REPO_ID", device_map="auto")\n'
            'tokenizer = AutoTokenizer.from_pretrained("REPO_ID")' + chat
        )
    elif form == "gguf":
        file_name, info = gguf or ("model.gguf", {})
        title = f"{policy['name']} (GGUF, {precision})"
        what = (
            f"Version `{policy['name']}` merged into `{base_name}` and written as one GGUF file "
            f"(`{file_name}`, {precision}) for llama.cpp, Ollama and LM Studio; the tokenizer and chat template "
            "are inside the file. `Modelfile` sets Ollama's template, stop tokens and sampling defaults."
        )
        language = "sh"
        usage = (
            "# Ollama, from a folder holding both files\n"
            "ollama create my-model -f Modelfile && ollama run my-model\n\n"
            "# llama.cpp\n"
            f'llama-cli -hf "REPO_ID" -cnv    # or: llama-cli -m {file_name} -cnv\n\n'
            "# transformers (dequantizes to float32)\n"
            "python -c 'from transformers import AutoModelForCausalLM; "
            f'AutoModelForCausalLM.from_pretrained("REPO_ID", gguf_file="{file_name}")\''
        )
        if info.get("tensor_types"):
            what += " Tensor types: " + ", ".join(f"{n} {k}" for k, n in sorted(info["tensor_types"].items())) + "."
    else:
        title = f"{policy['name']} (LoRA adapter)"
        what = (
            f"A LoRA adapter (PEFT) for `{base_name}`: version `{policy['name']}`, trained with "
            f"**{algorithm.upper()}** (TRL) on human feedback collected in RLHF Studio. Only the adapter is "
            "in this repo; load it onto the base model."
        )
        usage = (
            "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{base_name}")\n'
            'model = PeftModel.from_pretrained(base, "REPO_ID")\n'
            'tokenizer = AutoTokenizer.from_pretrained("REPO_ID")' + chat
        )
    if not base_id:
        what += (
            f"\n\n> Note: the base model `{base_name}` has no Hub id here, so this export names it by its local "
            "path and loads only where that path exists. Export again with the base model's Hub id to fix it."
        )
    lines = [f"---\n{data.to_yaml()}\n---", "", f"# {title}", "", what, ""]
    lines += [
        "## Usage",
        "",
        f"```{language}",
        usage,
        "```",
        "",
        "## Provenance",
        "",
        f"- algorithm: `{algorithm}` (TRL), parent version: `{policy['parent'] or 'base'}`",
        f"- base model: `{base_name}`",
        f"- training data hash (sha256 of the frozen rows): `{policy['data_hash'] or 'n/a'}`",
    ]
    if "examples" in record:
        lines.append(f"- training examples: {record['examples']}")
    if record.get("filters"):
        lines.append(f"- data filters: `{json.dumps(record['filters'], sort_keys=True, default=str)}`")
    created = policy["created_at"]
    lines.append(f"- created: {created.isoformat() if hasattr(created, 'isoformat') else created}")
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
            lines.append(
                f"| {name} | {values[0]:.4g} | {values[-1]:.4g} | {min(values):.4g} | {max(values):.4g}"
                f" | {len(values)} |"
            )
    else:
        lines.append("No metrics were recorded for this version.")
    if has_curves:
        lines += ["", f"![Loss, reward and KL during training]({CURVES_FILE})"]
    lines += ["", "## What changed", ""] + _report_lines(run.get("report"), policy)
    if run.get("lineage"):
        lines += card_lines(run["lineage"])
    lines += ["## Standard benchmarks", ""] + benchmark_lines(run.get("benchmarks"))
    lines += ["## Safety", ""] + run.get("safety", [])
    lines += ["", "Exported by RLHF Studio; `training_config.json` holds the full run record.", ""]
    return "\n".join(lines)


def eval_results(benchmarks: dict[str, Any]) -> list[Any]:
    """The card's model-index entries: one per task and metric, from lm-evaluation-harness."""
    from huggingface_hub import EvalResult

    source = f"lm-evaluation-harness {benchmarks['settings']['lm_eval_version']} (RLHF Studio)"
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=row["task"],
            dataset_name=row["task"],
            metric_type=row["metric"],
            metric_value=round(row["value"], 4),
            source_name=source,
            source_url="https://github.com/EleutherAI/lm-evaluation-harness",
        )
        for row in benchmarks["tasks"]
    ]


def benchmark_lines(benchmarks: dict[str, Any] | None) -> list[str]:
    if not benchmarks:
        return ["Not benchmarked (`launch.py bench VERSION` runs lm-evaluation-harness against the parent).", ""]
    settings = benchmarks["settings"]
    lines = [
        f"lm-evaluation-harness {settings['lm_eval_version']}, chat template "
        f"{'on' if settings['chat_template'] else 'off'}, few-shot {settings['num_fewshot'] or 'task default'}, "
        f"limit {settings['limit'] or 'none'}, seed {settings['seed']}; the adapter guard says "
        f"{'applied' if benchmarks['adapter_applied'] else 'not applied / identical to base'}.",
        "",
        f"| task | metric | this version | {benchmarks['against'] or 'parent'} | change (points) |",
        "|---|---|---|---|---|",
    ]
    for row in benchmarks["tasks"]:
        other = "" if row["against_value"] is None else f"{row['against_value']:.3f}"
        change = (
            ""
            if row.get("change_points") is None
            else f"{row['change_points']:+.1f}" + (" (regressed)" if row.get("regressed") else "")
        )
        lines.append(f"| {row['task']} | {row['metric']} | {row['value']:.3f} | {other} | {change} |")
    return lines + [""]


def _report_lines(report: dict[str, Any] | None, policy: Version) -> list[str]:
    """The card's "what changed" section: the verdict and figures of the version against its parent."""
    if not report:
        return [
            f'No "what changed" report was computed for `{policy["name"]}` (RLHF Studio computes one after '
            "every training job).",
            "",
        ]
    m = report["metrics"]

    def pair(name: str, fmt: str) -> str:
        old, new = m.get(f"{name}_against"), m.get(f"{name}_version")
        return (
            "n/a" if new is None else f"{fmt.format(old)} -> {fmt.format(new)}" if old is not None else fmt.format(new)
        )

    lines = [
        f"**{report['summary']}**",
        "",
        f"Measured against `{report['against']}` on {m['held_out_pairs']} labeled pairs and {m.get('prompts', 0)} "
        "prompts that neither version was trained on.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| log-prob ranking accuracy on held-out pairs | {pair('accuracy', '{:.2f}')} |",
        f"| KL to `{report['against']}` (nats per token) | "
        f"{'n/a' if m.get('kl_per_token') is None else format(m['kl_per_token'], '.3f')} |",
        f"| answer length (tokens) | {pair('length', '{:.0f}')} |",
        f"| refusal rate | {pair('refusal', '{:.0%}')} |",
        f"| diversity (distinct-2) | {pair('distinct2', '{:.2f}')} |",
    ]
    if m.get("win_rate") is not None:
        lines.append(f"| win rate judged by `{m['reward_model']}` | {m['win_rate']:.0%} |")
    preferences = (m.get("label_signature") or {}).get("preferences") or []
    if preferences:
        lines += [
            "",
            "What the training labels prefer: "
            + "; ".join(p.removeprefix("your labels prefer ") for p in preferences)
            + ".",
        ]
    if report.get("evidence"):
        lines += ["", "Evidence (two-sided sign tests, Holm-corrected together):", ""]
        lines += [
            f"- {e['says'] or 'not significant'}: {e['text']} (p = {e['adjusted_p']:.2g})" for e in report["evidence"]
        ]
    lines += [f"\n> warning: {w}" for w in report.get("warnings", [])]
    return lines + [""]


def safety_lines(db: Database, policy: Version) -> list[str]:
    """The card's safety section: the latest red-team evaluation (rates only, no quoted text) and the change
    against the parent when both were evaluated."""
    from core.compare.safety import latest_safety, percent, safety_change

    run = latest_safety(db, policy["name"])
    if run is None:
        return ["No safety evaluation was run for this version (RLHF Studio: `launch.py safety-eval`).", ""]
    lines = [
        f"On {run['prompts']} red-team prompts written for RLHF Studio ({run['harmful']} harmful requests, "
        f"{run['benign']} benign look-alikes; prompt set `{run['prompt_set_hash'][:12]}`), judged by "
        f"{run['judged_by']}:",
        "",
        f"- unsafe-answer rate: {percent(run['unsafe_rate'])}",
        f"- over-refusal rate: {percent(run['over_refusal_rate'])}",
    ]
    change = safety_change(db, policy["name"])
    if change:
        lines.append(
            f"- against `{change['against']}`: "
            + ("; ".join(change["reasons"]) if change["worse"] else "not less safe")
        )
    return lines + [""]


def dataset_card(
    kind: str,
    rows: list[dict[str, Any]],
    skipped: dict[str, Any],
    data_hash: str,
    filters: dict[str, Any],
    formats: tuple[str, ...],
    card: CardOptions,
    name: str | None,
) -> str:
    """The README.md of a dataset export: its TRL columns, files, data hash, filters and a load_dataset snippet."""
    from huggingface_hub import DatasetCardData

    n = len(rows)
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    trainers = {"preference": "dpo", "reward": "reward-modeling", "unpaired": "kto", "sft": "sft"}[kind]
    data_file = "data/train.parquet" if "parquet" in formats else "data/train.jsonl"
    meta = DatasetCardData(
        license=card.license,
        task_categories=["text-generation"],
        size_categories=[size],
        tags=["trl", trainers, "rlhf", "human-feedback", "rlhf-studio"],
        pretty_name=name or f"RLHF Studio {kind} data",
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}],
    )
    columns = {
        "preference": "`prompt`, `chosen`, `rejected` (conversational: lists of {role, content})",
        "reward": "`prompt`, `chosen`, `rejected`, `margin` (weighted rating gap, >= 0)",
        "unpaired": "`prompt`, `completion`, `label` (True = desirable)",
        "sft": "`messages` (the conversation ending with the answer it should have been)",
    }[kind]
    lines = [
        f"---\n{meta.to_yaml()}\n---",
        "",
        f"# {name or f'RLHF Studio {kind} data'}",
        "",
        f"Human feedback collected in RLHF Studio, as a TRL **{kind}** dataset ({n} rows).",
        "",
        f"- columns: {columns}",
        f"- files: {', '.join('data/train.' + f for f in formats)}",
        f"- data hash (sha256 of the rows): `{data_hash}`",
        f"- filters: `{json.dumps(filters, sort_keys=True, default=str)}`",
        f"- skipped labels: `{json.dumps(skipped, sort_keys=True)}`",
        f"- exported: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("REPO_ID", split="train")',
        "```",
        "",
    ]
    return "\n".join(lines)
