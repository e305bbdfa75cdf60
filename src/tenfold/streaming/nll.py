"""Negative log-likelihood of next tokens: the one measure every streaming evaluation reports (StreamingLLM,
Xiao et al. 2023, Sec. 4.1: perplexity is ``exp`` of its mean)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL in nats, flat: ``logits`` (..., V) scored against ``targets`` of the same leading shape;
    returns a float32 tensor of ``targets.numel()`` values (computed in float32 whatever the logits' dtype)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")


def rows_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL in nats, (B, n) float64, for ``targets`` (B, n) scored by the first ``n`` positions of
    ``logits`` (B, >= n, V)."""
    b, n = targets.shape
    return token_nll(logits[:, :n], targets).view(b, n).double()
