"""Per-token log-probabilities for TRL's trainers on CPU, from dense logits instead of TRL's chunked kernel.

Why: TRL (1.16) scores answers in every trainer the studio runs (SFT, DPO, KTO, online RL) through its fused LM head,
``ChunkedLogProbFunction``: a Triton kernel on GPUs and, everywhere else, a torch fallback that makes about twenty
fp32 passes over each [tokens, 32768] tile of logits and runs its gradient GEMMs in fp32. On a 2-core CPU that took
2.8 s of a ~6 s DPO micro-batch (SmolLM2-135M, 4 x 480 tokens, forward and backward): half of every training step.

What: :class:`DenseLogProbFunction` has the chunked function's signature and outputs (log-probs, entropy,
``log(sum p^2)``, mean logit, whether the label is the first top-1 token) and gradients (of the log-probs and the
entropy). It takes a block of tokens' logits at once (``BLOCK_ELEMENTS`` values, so memory stays bounded as with
TRL's kernel), derives every output from one softmax, and recomputes the block's logits in the backward instead of
keeping them. Its GEMMs run in the autocast dtype (bf16 where the CPU has it), as a plain model's LM head does. Off CPU
it hands over to TRL's kernel. :func:`use_dense_logprobs_on_cpu` installs it in place of TRL's (the training child
does, once per job).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Logits held at once: 2**25 fp32 values = 128 MiB (682 tokens of a 49k vocabulary, 220 of a 152k one).
BLOCK_ELEMENTS = 2**25
ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _block_rows(weight: torch.Tensor) -> int:
    """Tokens per block: as many as keep one block's logits within BLOCK_ELEMENTS."""
    return max(1, BLOCK_ELEMENTS // weight.shape[0])


def _logits(hidden, weight, bias, scale: float, softcap: float | None, inv_t: float) -> torch.Tensor:
    """fp32 logits after the model's scaling, soft-capping and the temperature (TRL's transform)."""
    z = F.linear(hidden, weight, bias).float()
    if scale != 1.0:
        z.mul_(scale)
    if softcap is not None:
        z.div_(softcap).tanh_().mul_(softcap)
    if inv_t != 1.0:
        z.mul_(inv_t)
    return z


class _Dense(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale, softcap, inv_t, outputs, dtype):
        ctx.set_materialize_grads(False)
        weight_c, bias_c = weight.to(dtype), None if bias is None else bias.to(dtype)
        block = _block_rows(weight)
        fields: list[list[torch.Tensor]] = [[] for _ in range(6)]  # the five outputs, then log Z
        for start in range(0, hidden.shape[0], block):
            z = _logits(hidden[start : start + block].to(dtype), weight_c, bias_c, scale, softcap, inv_t)
            t = targets[start : start + block].unsqueeze(-1)
            top_z, top = z.max(-1, keepdim=True)  # the index of the first maximum, as TRL's is_top1
            target_z = z.gather(-1, t).squeeze(-1)
            if "mean_logits" in outputs:
                fields[3].append(z.mean(-1))
            e = z.sub(top_z).exp_()  # exp(z - max)
            total = e.sum(-1)
            block_log_z = top_z.squeeze(-1) + total.log()
            fields[0].append(target_z - block_log_z)
            if "entropy" in outputs:
                fields[1].append(block_log_z - torch.linalg.vecdot(e, z) / total)
            if "log_sum_sq_probs" in outputs:
                fields[2].append(torch.linalg.vecdot(e, e).log() - 2 * total.log())
            fields[4].append((top == t).squeeze(-1))
            fields[5].append(block_log_z)
            del z, e
        log_probs, entropy, log_sum_sq, mean_logits, top1, log_z = (
            torch.cat(parts) if parts else None for parts in fields
        )
        is_top1 = top1 if "is_top1" in outputs else None
        ctx.save_for_backward(hidden, weight, bias, targets, log_z, log_z if entropy is None else entropy)
        ctx.args = (scale, softcap, inv_t, dtype, entropy is not None)
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq, mean_logits, is_top1) if x is not None))
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, bias, targets, log_z, entropy = ctx.saved_tensors
        scale, softcap, inv_t, dtype, has_entropy = ctx.args
        if not has_entropy:
            grad_entropy = None
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        weight_c, bias_c = weight.to(dtype), None if bias is None else bias.to(dtype)
        grad_h = torch.zeros_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32) if want_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32) if want_b and bias is not None else None
        if grad_log_probs is None and grad_entropy is None:
            return grad_h, grad_w, grad_b, None, None, None, None, None, None
        block = _block_rows(weight)
        for start in range(0, hidden.shape[0], block):
            end = min(start + block, hidden.shape[0])
            h = hidden[start:end].to(dtype)
            z = _logits(h, weight_c, bias_c, scale, softcap, inv_t)
            # z = inv_t * c * tanh(scale * x / c), so d tanh / d(its argument) = 1 - (z / (inv_t * c))^2
            cap_slope = None if softcap is None else z.div(inv_t * softcap).square_().neg_().add_(1.0)
            lz = log_z[start:end].unsqueeze(-1)
            p = z.sub(lz).exp_()
            g_lp = grad_log_probs[start:end].float().unsqueeze(-1) if grad_log_probs is not None else None
            # d log p_t / dz = onehot_t - p;  d H / dz = -p * (log p + H)
            if grad_entropy is not None:
                g_ent = grad_entropy[start:end].float().unsqueeze(-1)
                g = z.sub_(lz - entropy[start:end].unsqueeze(-1)).mul_(g_ent)  # (log p + H) * g_ent
                if g_lp is not None:
                    g.add_(g_lp)
                g.mul_(p).neg_()
            else:
                assert g_lp is not None  # the early return above: one of the two gradients is set
                g = p.mul_(g_lp).neg_()
            if g_lp is not None:
                g.scatter_add_(-1, targets[start:end].unsqueeze(-1), g_lp)
            if cap_slope is not None:
                g.mul_(cap_slope)
            if scale * inv_t != 1.0:
                g.mul_(scale * inv_t)
            g_c = g.to(dtype)
            del z, p, g, cap_slope
            if grad_h is not None:
                grad_h[start:end] = (g_c @ weight_c).to(hidden.dtype)
            if grad_w is not None:
                grad_w.add_((g_c.t() @ h).float())
            if grad_b is not None:
                grad_b.add_(g_c.float().sum(0))
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


class DenseLogProbFunction:
    """Drop-in for ``trl.kernels.ChunkedLogProbFunction`` (same ``apply`` arguments, same five outputs)."""

    chunked: Any = None  # TRL's own function, used off CPU (set by use_dense_logprobs_on_cpu)

    @classmethod
    def apply(
        cls,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = ALL_OUTPUTS,
    ):
        device = hidden.device.type
        if device != "cpu" and cls.chunked is not None:
            return cls.chunked.apply(
                hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping, logit_scale, outputs
            )
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        with torch.autocast(device, enabled=False):
            return _Dense.apply(
                hidden, weight, bias, targets, logit_scale, final_logit_softcapping, 1.0 / temperature, outputs, dtype
            )


def use_dense_logprobs_on_cpu() -> None:
    """Score on CPU with :class:`DenseLogProbFunction` in every TRL trainer built after this call (idempotent)."""
    from trl.trainer import utils

    current: Any = utils._ChunkedLogProbFunction
    if current is DenseLogProbFunction:
        return
    DenseLogProbFunction.chunked = current
    setattr(utils, "_ChunkedLogProbFunction", DenseLogProbFunction)  # noqa: B010 - a module global TRL reads per call
