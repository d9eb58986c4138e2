"""DPO, ORPO and SimPO in torch, from each response's summed log-probability (see
`forgellm.training.preference` for the formulas). Checked against TRL in tests/test_preference_loss.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from forgellm.training.preference import PreferenceSettings


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation near 0 (the branch at -log 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def pair_losses(
    settings: PreferenceSettings, logps: torch.Tensor, counts: torch.Tensor, reference: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss per pair (B,), metrics per pair (B, 6) in `METRICS[1:]` order, without gradient).

    logps, counts: (B, 2) summed log-probabilities and token counts of [chosen, rejected];
    reference: (B, 2) the reference model's logps (dpo only)."""
    logps = logps.float()
    average = logps / counts.clamp(min=1)
    if settings.loss == "dpo":
        if reference is None:
            raise RuntimeError("dpo needs the reference log-probabilities of this batch")
        ratios = logps - reference.float()
        z = settings.beta * (ratios[:, 0] - ratios[:, 1])
        eps = settings.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
        rewards = settings.beta * ratios
    elif settings.loss == "simpo":
        losses = -F.logsigmoid(settings.beta * (average[:, 0] - average[:, 1]) - settings.simpo_gamma)
        rewards = settings.beta * average
    elif settings.loss == "orpo":
        log_odds = (average[:, 0] - average[:, 1]) - (log1mexp(average[:, 0]) - log1mexp(average[:, 1]))
        losses = -average[:, 0] - settings.orpo_lambda * F.logsigmoid(log_odds)
        rewards = settings.orpo_lambda * average
    else:
        raise ValueError(f"unknown preference loss {settings.loss!r}")
    rewards = rewards.detach()
    metrics = torch.stack(
        [
            rewards[:, 0],
            rewards[:, 1],
            rewards[:, 0] - rewards[:, 1],
            (rewards[:, 0] > rewards[:, 1]).float(),
            average[:, 0].detach(),
            average[:, 1].detach(),
        ],
        dim=1,
    )
    return losses, metrics
