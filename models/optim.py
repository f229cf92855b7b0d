"""Layerwise optimisers: each weight tensor is a layer that gets its own step size.

LightningCLI builds an optimiser from ``--optimizer`` with ``model.parameters()`` as the
first argument, so every class here works on a flat parameter list. A tensor with two or
more dimensions is a layer's weight; a 1-d tensor (bias, gain) belongs to a layer but is
handled as each paper specifies.

- ``LARS`` and ``LAMB`` wrap timm's ``timm.optim.Lars`` and ``timm.optim.Lamb``
  (timm 1.0): You et al. 2017, "Large Batch Training of Convolutional Networks",
  arXiv:1708.03888, and You et al. 2019, "Large Batch Optimization for Deep Learning",
  arXiv:1904.00962. Both papers exclude biases and gains from the trust ratio.
- ``Fromage``: Bernstein et al. 2020, "On the distance between two neural networks and the
  stability of learning", arXiv:2002.03432, written from the paper's Algorithm 1.
- ``BlockNormalizedSGD``: Yu et al. 2017, "Block-Normalized Gradient Method",
  arXiv:1707.04822, with each tensor as one block.
- ``DepthScaledSGD``: per-layer learning rates from running gradient norms (defined in
  its docstring).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from timm.optim import Lamb as TimmLamb
from timm.optim import Lars as TimmLars
from torch import Tensor
from torch.optim import SGD, Optimizer


def split_weights_and_gains(params: Iterable[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split parameters into layer weights (2 or more dimensions) and biases/gains (1-d)."""
    weights, gains = [], []
    for param in params:
        if isinstance(param, dict):
            raise TypeError(
                "layerwise optimisers take a flat parameter list (model.parameters()), "
                "got a parameter group dict; pass the tensors instead"
            )
        (weights if param.ndim >= 2 else gains).append(param)
    return weights, gains


def _check_positive(name: str, value: float) -> None:
    if not value > 0.0:
        raise ValueError(f"{name} must be > 0, got {value}; pass a positive value")


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value}; pass a value such as 0.9")


def _trust_ratio_groups(params: Iterable[Tensor]) -> list[dict[str, Any]]:
    """Return timm parameter groups: weights with the trust ratio, biases and gains without.

    timm adapts a group only when its weight decay is non-zero or ``always_adapt`` is set,
    so the group of biases and gains takes the base optimiser's plain steps.
    """
    weights, gains = split_weights_and_gains(params)
    groups = [
        {"params": weights, "always_adapt": True},
        {"params": gains, "weight_decay": 0.0, "always_adapt": False},
    ]
    return [group for group in groups if group["params"]]


class LARS(TimmLars):
    """LARS: SGD with momentum whose step for each weight tensor W is scaled by the trust
    ratio ``trust_coefficient * ||W|| / (||g|| + weight_decay * ||W|| + eps)``.

    Implemented by ``timm.optim.Lars`` (timm 1.0). Biases and gains take plain SGD steps
    without the trust ratio or weight decay, as in You et al. 2017.

    Args:
        params: ``model.parameters()``.
        lr: global learning rate, multiplied by each layer's trust ratio.
        momentum: SGD momentum.
        weight_decay: L2 weight decay on weight tensors only.
        trust_coefficient: eta in the trust ratio.
        eps: added to the denominator of the trust ratio.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        _check_positive("lr", lr)
        _check_positive("trust_coefficient", trust_coefficient)
        _check_unit_interval("momentum", momentum)
        super().__init__(
            _trust_ratio_groups(params),
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coeff=trust_coefficient,
            eps=eps,
        )


class LAMB(TimmLamb):
    """LAMB: Adam whose update u for each weight tensor W is scaled by ``||W|| / ||u||``.

    Implemented by ``timm.optim.Lamb`` (timm 1.0, the NVIDIA LAMB variant). Biases and
    gains take plain Adam steps without the trust ratio or weight decay, as in You et al.
    2019. timm's global gradient-norm clipping is off unless ``max_grad_norm`` is set.

    Args:
        params: ``model.parameters()``.
        lr: global learning rate, multiplied by each layer's trust ratio.
        betas: Adam's moment decay rates.
        eps: Adam's denominator term.
        weight_decay: weight decay on weight tensors only, added to the update.
        max_grad_norm: clip the global gradient norm to this value first; None for no clip.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        _check_positive("lr", lr)
        super().__init__(
            _trust_ratio_groups(params),
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
        )


class Fromage(Optimizer):
    """Fromage ("Frobenius matched gradient descent"), Bernstein et al. 2020, Algorithm 1.

    Each tensor W with gradient g steps to
    ``(W - lr * ||W|| / ||g|| * g) / sqrt(1 + lr^2)``, a relative step of size ``lr``
    in Frobenius norm; dividing by sqrt(1 + lr^2) undoes the norm growth that the step
    adds. A tensor whose norm or gradient norm is zero (a bias at its zero
    initialisation) takes the plain step ``W - lr * g`` without the division, so it can
    leave zero.

    Args:
        params: ``model.parameters()``.
        lr: relative step size per layer; the paper recommends 0.01.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01) -> None:
        _check_positive("lr", lr)
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                weight_norm = torch.linalg.vector_norm(param)
                grad_norm = torch.linalg.vector_norm(param.grad)
                if weight_norm > 0 and grad_norm > 0:
                    param.sub_(param.grad * (lr * weight_norm / grad_norm))
                    param.div_((1.0 + lr**2) ** 0.5)
                else:
                    param.add_(param.grad, alpha=-lr)
        return loss


class _GradientScaledSGD(SGD):
    """SGD with momentum on gradients that a subclass rescales per tensor first.

    NOTE: the rescaled gradient replaces ``param.grad`` in place, so code that reads
    ``.grad`` after ``step()`` reads the scaled value.
    """

    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float) -> None:
        _check_positive("lr", lr)
        _check_unit_interval("momentum", momentum)
        super().__init__(params, lr=lr, momentum=momentum)

    def gradient_scales(self, params: list[Tensor], grad_norms: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if params:
            grads = [p.grad for p in params]
            grad_norms = torch.stack(torch._foreach_norm(grads))
            scales = self.gradient_scales(params, grad_norms)
            torch._foreach_mul_(grads, list(scales.unbind()))
        super().step()
        return loss


class BlockNormalizedSGD(_GradientScaledSGD):
    """Block-normalised SGD (Yu et al. 2017): each tensor's gradient g is replaced by
    ``g / (||g|| + eps)`` before a momentum SGD step.

    Every layer then moves by about ``lr`` in Frobenius norm per step, whatever the size
    of its gradient, so vanishing gradients no longer stall the early layers. Each weight
    and each bias is its own block.

    Args:
        params: ``model.parameters()``.
        lr: step length per block.
        momentum: SGD momentum, applied to the normalised gradients.
        eps: keeps the division finite for a zero gradient.
    """

    def __init__(
        self, params: Iterable[Tensor], lr: float = 0.01, momentum: float = 0.9, eps: float = 1e-12
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        self.eps = eps

    def gradient_scales(self, params: list[Tensor], grad_norms: Tensor) -> Tensor:
        return 1.0 / (grad_norms + self.eps)


class DepthScaledSGD(_GradientScaledSGD):
    """SGD whose per-layer learning rate makes every layer step as far as the layer with
    the largest gradient.

    Each tensor i keeps a running average of its gradient norm,
    ``m_i <- beta * m_i + (1 - beta) * ||g_i||`` (bias-corrected as in Adam). With
    ``m_ref`` the largest m_i over weight tensors (usually the readout's), tensor i's
    gradient is multiplied by ``s_i = min(m_ref / m_i, max_scale)`` before a momentum SGD
    step. Early layers whose gradients vanish thus get learning rates raised by the
    vanishing factor, while the overall step still follows the size of the gradient, which
    sets this apart from ``BlockNormalizedSGD``. Scales come from averages rather than the
    current norm so that one noisy batch does not set a layer's learning rate.

    Args:
        params: ``model.parameters()``.
        lr: learning rate of the reference layer.
        momentum: SGD momentum, applied to the scaled gradients.
        beta: decay rate of the running gradient-norm averages.
        max_scale: upper bound on any layer's learning-rate multiplier.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        momentum: float = 0.9,
        beta: float = 0.9,
        max_scale: float = 1e8,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        _check_unit_interval("beta", beta)
        if not max_scale >= 1.0:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}; pass e.g. 1e8")
        self.beta = beta
        self.max_scale = max_scale
        # NOTE: the running averages are not part of state_dict(), so a run resumed from
        # a checkpoint starts them afresh.
        self._norm_average: Tensor | None = None
        self._steps = 0

    def gradient_scales(self, params: list[Tensor], grad_norms: Tensor) -> Tensor:
        if self._norm_average is None or self._norm_average.shape != grad_norms.shape:
            self._norm_average = torch.zeros_like(grad_norms)
            self._steps = 0
        self._steps += 1
        self._norm_average.lerp_(grad_norms, 1.0 - self.beta)
        averages = self._norm_average / (1.0 - self.beta**self._steps)
        is_weight = torch.tensor([p.ndim >= 2 for p in params], device=averages.device)
        reference = averages[is_weight].max() if is_weight.any() else averages.max()
        tiny = torch.finfo(averages.dtype).tiny
        return (reference / averages.clamp(min=tiny)).clamp(max=self.max_scale)
