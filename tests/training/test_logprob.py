"""On CPU the trainers score answers with core.training.logprob's dense function instead of TRL's chunked kernel:
the same five outputs and the same gradients, checked here against TRL's own ``ChunkedLogProbFunction``."""

from __future__ import annotations

import pytest
import torch
from trl.kernels import ChunkedLogProbFunction

from core.training import logprob
from core.training.logprob import ALL_OUTPUTS, DenseLogProbFunction, use_dense_logprobs_on_cpu


def scored(function, outputs, *, bias=False, softcap=None, temperature=1.0, scale=1.0, bf16=False, weight_grad=True):
    """Outputs and gradients of ``log_probs . w1 + entropy . w2`` (w: fixed random weights) for one function."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 32, generator=gen).requires_grad_()
    weight = (torch.randn(500, 32, generator=gen) * 0.3).requires_grad_(weight_grad)
    b = torch.randn(500, generator=gen).requires_grad_() if bias else None
    targets = torch.randint(0, 500, (300,), generator=gen)
    w1, w2 = torch.randn(300, generator=gen), torch.randn(300, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = function.apply(hidden, weight, b, targets, temperature, 32768, softcap, scale, outputs)
    loss = (out[0] * w1).sum() + ((out[1] * w2).sum() if out[1] is not None else 0)
    loss.backward()
    grads = [t.grad for t in (hidden, weight, b) if t is not None and t.requires_grad]
    return out, grads


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"bias": True, "softcap": 20.0, "temperature": 0.7, "scale": 1.5},
        {"weight_grad": False, "bf16": True},
    ],
    ids=["plain", "bias-softcap-temperature-scale", "bf16-frozen-head"],
)
def test_dense_matches_trl_chunked_outputs_and_gradients(monkeypatch, case):
    monkeypatch.setattr(logprob, "BLOCK_ELEMENTS", 64 * 500)  # several token blocks
    expected, expected_grads = scored(ChunkedLogProbFunction, ALL_OUTPUTS, **case)
    got, got_grads = scored(DenseLogProbFunction, ALL_OUTPUTS, **case)
    for name, want, have in zip(ALL_OUTPUTS, expected, got, strict=True):
        if want.dtype == torch.bool:
            assert torch.equal(want, have), name
        else:
            torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4, msg=name)
    # TRL's CPU fallback runs its gradient GEMMs in fp32; the dense function in the autocast dtype (bf16 here)
    tol = 2e-2 if case.get("bf16") else 1e-4
    for want, have in zip(expected_grads, got_grads, strict=True):
        assert (have - want).norm() <= tol * want.norm()
    assert not got[4].requires_grad and got[2].requires_grad is False


def test_outputs_not_asked_for_are_none_and_log_probs_alone_train():
    (log_probs, entropy, log_sum_sq, mean_logits, is_top1), grads = scored(DenseLogProbFunction, ("log_probs",))
    assert entropy is None and log_sum_sq is None and mean_logits is None and is_top1 is None
    (want, *_), want_grads = scored(ChunkedLogProbFunction, ("log_probs",))
    torch.testing.assert_close(log_probs, want, rtol=1e-4, atol=1e-4)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4)


def test_installing_replaces_trls_function_for_the_trainers_and_is_idempotent(monkeypatch):
    from trl.trainer import utils

    monkeypatch.setattr(utils, "_ChunkedLogProbFunction", ChunkedLogProbFunction)
    use_dense_logprobs_on_cpu()
    use_dense_logprobs_on_cpu()
    assert utils._ChunkedLogProbFunction is DenseLogProbFunction
    assert DenseLogProbFunction.chunked is ChunkedLogProbFunction  # kept for GPUs
