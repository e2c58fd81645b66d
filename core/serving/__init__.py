"""Serving: the loaded model, its adapters, and every way the studio generates or scores text with them.

``hardware``   what this machine can do (device, bf16, memory) and the precision that follows
``models``     the default model provisioned offline, the tiny test model, model specs, one loaded-model cache
``policies``   the version registry: the base model and every trained version (v1, v2, ...)
``adapters``   LoRA adapters on the shared model: which are loaded, per-row adapters in one batched forward
``scheduler``  one generation scheduler per model: concurrent requests share decoding steps
``generate``   chat streaming, the labeling tab's paired candidates, and batched answers for evaluations
``scoring``    log-probabilities of given answers, and two answers to one prompt
``engine``     an external OpenAI-compatible engine serving chat, pairs, arena and compare
``host``       the ports (Host, ModelHost) the rest of core sees the studio through
"""
