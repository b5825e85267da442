"""LARS as in MAE's `util/lars.py` (from MoCo v3): the optimiser of the MAE/MILAN linear probe (`optim.name=lars`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio; no weight decay and no trust scaling for params with ndim <= 1.

    For a matrix p with gradient g: d = g + wd * p; d *= trust * ||p|| / ||d|| (when both norms are > 0);
    mu = momentum * mu + d; p -= lr * mu.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # not a norm weight or a bias
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, g["trust_coefficient"] * param_norm / update_norm, one),
                        one,
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss
