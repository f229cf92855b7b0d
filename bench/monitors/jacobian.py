"""Jacobian-spectrum monitor: singular values of the input-to-last-hidden-layer Jacobian.

The map measured is x -> h_L, from the input to the last hidden layer's output, at each
example of a fixed probe batch. This is the object of dynamical isometry (Pennington et
al. 2017, "Resurrecting the sigmoid in deep learning through dynamical isometry",
arXiv:1711.04735): a network trains fast when all singular values of this Jacobian sit
near 1. The readout is left out because it maps to 10 logits, so its Jacobian has at
most 10 nonzero singular values whatever the hidden layers do.

Logged as ``jacobian/sv_mean``, ``jacobian/sv_std`` (standard deviation of the singular
values, the spread) and ``jacobian/sv_max``, pooled over the probe examples' spectra.

Two ways to compute them:

- exact, when min(input dim, hidden width) <= ``exact_max_width``: per-example Jacobians
  from one batched ``torch.func.vjp`` product (see ``exact_singular_values``), then
  ``torch.linalg.svdvals``.
- randomised otherwise: stochastic Lanczos quadrature (Ubaru, Chen and Saad 2017, "Fast
  Estimation of tr(f(A)) via Stochastic Lanczos Quadrature") on the Gram matrix J^T J
  (or J J^T, whichever is smaller), one Rademacher start vector per probe example, with
  matrix-vector products from ``torch.func.jvp`` and ``vjp``. mean(s) and mean(s^2)
  come from the quadrature with f = sqrt and f = identity, and sv_max from the largest
  Ritz value, which converges from below.

The network is measured in eval mode, so each example's Jacobian is its own. A batch-norm
layer in eval mode normalises with its running statistics, which at initialisation are
mean 0 and variance 1, not the statistics the network trains with. So during a measurement
every batch-norm layer normalises with the probe batch's own mean and variance: the map
measured is the training-mode network at the probe batch, with those statistics held fixed.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn
from torch.func import jvp, vjp
from torch.nn.modules.batchnorm import _BatchNorm
from typing_extensions import override

from bench.monitors.gradient_flow import _probe_batch
from models.remedies.regularizers import hidden_features

log = logging.getLogger(__name__)

EXACT = "exact"
LANCZOS = "lanczos"


@dataclass
class JacobianSnapshot:
    """Singular-value statistics of the Jacobian at one optimiser step.

    ``singular_values`` contains the pooled spectrum when it was computed exactly, else None.
    """

    step: int
    sv_mean: float
    sv_std: float
    sv_max: float
    method: str
    singular_values: list[float] | None = None

    def metrics(self) -> dict[str, float]:
        return {
            "jacobian/sv_mean": self.sv_mean,
            "jacobian/sv_std": self.sv_std,
            "jacobian/sv_max": self.sv_max,
        }

    def to_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "step": self.step,
            "sv_mean": self.sv_mean,
            "sv_std": self.sv_std,
            "sv_max": self.sv_max,
            "method": self.method,
        }
        if self.singular_values is not None:
            summary["singular_values"] = self.singular_values
        return summary


def exact_singular_values(function: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Return the singular values of each example's Jacobian, [batch, min(in, out)].

    ``function`` maps a batch [batch, in] to [batch, out] and treats examples
    independently. Each example is repeated once per basis vector of the smaller side, so
    one batched product gives every Jacobian at once: J^T e_k by ``vjp`` when the output is
    smaller, else J e_k as the ``vjp`` of the ``vjp`` (linear in its cotangent). On a
    depth-30 tanh network that double ``vjp`` took 17 ms where ``jvp`` took 39 ms.
    """
    batch, in_dim = x.shape
    out_dim = function(x[:1]).shape[1]
    size = min(in_dim, out_dim)
    basis = torch.eye(size, dtype=x.dtype, device=x.device).repeat(batch, 1)
    repeated = x.repeat_interleave(size, dim=0)
    _, pullback = vjp(function, repeated)
    if in_dim <= out_dim:
        cotangent = torch.zeros(batch * size, out_dim, dtype=x.dtype, device=x.device)
        _, pullback_of_pullback = vjp(lambda v: pullback(v)[0], cotangent)
        (vectors,) = pullback_of_pullback(basis)
    else:
        (vectors,) = pullback(basis)
    # Rows are J e_k or J^T e_k; either stacking has the singular values of J.
    matrices = vectors.reshape(batch, size, -1)
    if not torch.isfinite(matrices).all():
        # A network whose forward pass overflows (a diverging run, or batch norm in eval
        # mode with degenerate running statistics) has no spectrum, and the SVD would raise.
        return torch.full((batch, size), float("nan"))
    return torch.linalg.svdvals(matrices)


def lanczos_estimate(
    function: Callable[[Tensor], Tensor], x: Tensor, steps: int
) -> tuple[float, float, float]:
    """Estimate (mean, std, max) of the Jacobian's singular values by stochastic Lanczos
    quadrature, with one Rademacher start vector per example of ``x``.
    """
    out, pullback = vjp(function, x)
    in_dim, out_dim = x.shape[1], out.shape[1]

    def jacobian_product(v: Tensor) -> Tensor:
        return jvp(function, (x,), (v,))[1]

    def transpose_product(u: Tensor) -> Tensor:
        return pullback(u)[0]

    if in_dim <= out_dim:
        size = in_dim

        def gram(v: Tensor) -> Tensor:
            return transpose_product(jacobian_product(v))
    else:
        size = out_dim

        def gram(v: Tensor) -> Tensor:
            return jacobian_product(transpose_product(v))

    start = torch.randint(0, 2, (x.shape[0], size), device=x.device).to(x.dtype) * 2 - 1
    ritz_values, weights = _lanczos_quadrature(gram, start, min(steps, size))
    ritz_values = ritz_values.clamp(min=0.0)
    mean = (weights * ritz_values.sqrt()).sum(dim=1).mean()
    mean_square = (weights * ritz_values).sum(dim=1).mean()
    std = (mean_square - mean**2).clamp(min=0.0).sqrt()
    return mean.item(), std.item(), ritz_values.max().sqrt().item()


def _lanczos_quadrature(
    matvec: Callable[[Tensor], Tensor], start: Tensor, steps: int
) -> tuple[Tensor, Tensor]:
    """Run batched Lanczos with full reorthogonalisation from the rows of ``start``.

    Returns the Ritz values [batch, steps] and their Gauss quadrature weights (squared
    first components of the tridiagonal matrix's eigenvectors), which sum to 1 per row.
    """
    # The basis is kept in float64 because float32 Lanczos loses orthogonality within a
    # few tens of steps and then reports Ritz values above the largest eigenvalue.
    dtype = start.dtype
    start = start.double()
    basis = [start / torch.linalg.vector_norm(start, dim=1, keepdim=True)]
    alphas, betas = [], []
    for step in range(steps):
        w = matvec(basis[-1].to(dtype)).double()
        alphas.append((w * basis[-1]).sum(dim=1))
        q = torch.stack(basis, dim=1)
        for _ in range(2):  # Reorthogonalising twice is enough in floating point.
            w = w - torch.einsum("bkn,bk->bn", q, torch.einsum("bkn,bn->bk", q, w))
        if step == steps - 1:
            break
        beta = torch.linalg.vector_norm(w, dim=1)
        betas.append(beta)
        # A zero beta means the Krylov space is exhausted: the next vector then only
        # adds a zero off-diagonal, so any finite direction will do.
        basis.append(w / beta.clamp(min=torch.finfo(w.dtype).tiny).unsqueeze(1))
    tridiagonal = torch.diag_embed(torch.stack(alphas, dim=1))
    if betas:
        off_diagonal = torch.stack(betas, dim=1)
        tridiagonal = tridiagonal + torch.diag_embed(off_diagonal, 1)
        tridiagonal = tridiagonal + torch.diag_embed(off_diagonal, -1)
    ritz_values, vectors = torch.linalg.eigh(tridiagonal)
    return ritz_values, vectors[:, 0, :] ** 2


class JacobianSpectrumMonitor(pl.Callback):
    """Measure the Jacobian's singular values at initialisation, every N steps and at the end.

    The probe batch is the first ``probe_size`` examples of the first validation batch (or
    of the first training batch without a datamodule), fixed for the whole run. The network
    is put in eval mode while it is measured, so normalisation layers use their running
    statistics and examples stay independent. Works with any LightningModule whose
    ``network`` has ``features(x)`` or a ``hidden`` layer list (``DeepMLP``).

    Args:
        every_n_steps: optimiser steps between two measurements.
        probe_size: examples in the fixed probe batch. The cost of a measurement grows with
            it; at 16 and every 100 steps the monitor added 6% to the training time of a
            depth-30 tanh network (``python -m bench perf jacobian``).
        exact_max_width: compute the full spectrum when min(input dim, hidden width) is at
            most this, else the randomised estimate. The estimate's error falls as the
            Gram matrix and the probe grow: its mean was within 5% of the exact one for 64
            probe examples of a 40 x 40 Gram matrix, and about 20% off for 16 examples of
            16 x 16.
        lanczos_steps: Lanczos iterations of the randomised estimate.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        probe_size: int = 16,
        exact_max_width: int = 256,
        lanczos_steps: int = 30,
    ) -> None:
        for name, value, minimum in (
            ("every_n_steps", every_n_steps, 1),
            ("probe_size", probe_size, 1),
            ("exact_max_width", exact_max_width, 0),
            ("lanczos_steps", lanczos_steps, 1),
        ):
            if value < minimum:
                raise ValueError(
                    f"{name} must be >= {minimum}, got {value}; pass --jacobian.{name} "
                    f"{minimum} or more"
                )
        self.every_n_steps = every_n_steps
        self.probe_size = probe_size
        self.exact_max_width = exact_max_width
        self.lanczos_steps = lanczos_steps
        self.series: list[JacobianSnapshot] = []
        self.init: JacobianSnapshot | None = None
        self.end: JacobianSnapshot | None = None
        self._probe: Tensor | None = None

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.series, self.end = [], None
        x, _ = _probe_batch(trainer)
        if len(x) < self.probe_size:
            log.warning(
                "Jacobian probe: the first batch has %d examples, fewer than probe_size %d; "
                "measuring on %d (a larger --data.batch_size raises the limit)",
                len(x),
                self.probe_size,
                len(x),
            )
        self._probe = x[: self.probe_size].to(pl_module.device)
        self.init = self._measure_and_log(trainer, pl_module)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self.series[-1].step:
            self._measure_and_log(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.series or self.series[-1].step != trainer.global_step:
            self._measure_and_log(trainer, pl_module)
        self.end = self.series[-1]

    def measure(self, network: nn.Module, x: Tensor, step: int = 0) -> JacobianSnapshot:
        """Measure the spectrum of ``network``'s input-to-last-hidden Jacobian at ``x``."""
        shape = (-1, *x.shape[1:])

        def function(inputs: Tensor) -> Tensor:
            return hidden_features(network, inputs.reshape(shape)).flatten(1)

        flat = x.flatten(1)
        with batch_statistics_of(network, x), torch.no_grad():
            width = function(flat[:1]).shape[1]
            if min(flat.shape[1], width) <= self.exact_max_width:
                values = exact_singular_values(function, flat).flatten()
                return JacobianSnapshot(
                    step=step,
                    sv_mean=values.mean().item(),
                    sv_std=values.std(correction=0).item(),
                    sv_max=values.max().item(),
                    method=EXACT,
                    singular_values=values.tolist(),
                )
            mean, std, largest = lanczos_estimate(function, flat, self.lanczos_steps)
            return JacobianSnapshot(step, mean, std, largest, method=LANCZOS)

    def _measure_and_log(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> JacobianSnapshot:
        assert self._probe is not None
        snapshot = self.measure(pl_module.network, self._probe, trainer.global_step)
        self.series.append(snapshot)
        if not all(math.isfinite(value) for value in snapshot.metrics().values()):
            log.warning("Jacobian spectrum at step %d is not finite", snapshot.step)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(snapshot.metrics(), step=trainer.global_step)
                finite = math.isfinite(snapshot.sv_mean)
                if isinstance(logger, WandbLogger) and snapshot.singular_values and finite:
                    _log_histogram(logger, snapshot)
        return snapshot


@contextlib.contextmanager
def batch_statistics_of(network: nn.Module, x: Tensor) -> Iterator[None]:
    """Put ``network`` in eval mode with its batch-norm layers set to the statistics of ``x``.

    Inside the block every batch-norm layer normalises with the mean and the (biased)
    variance that a training-mode forward pass on ``x`` computes, so the eval-mode network
    gives the training-mode outputs on ``x``. Running statistics, counters and the training
    flag are restored on exit.
    """
    norms = [module for module in network.modules() if isinstance(module, _BatchNorm)]
    if norms and len(x) < 2:
        # Batch statistics of one example are undefined, so its running statistics stay.
        log.warning(
            "Jacobian probe: batch-norm layers need 2 or more probe examples for batch "
            "statistics; measuring with running statistics (raise --jacobian.probe_size)"
        )
        norms = []
    saved = [
        (module.momentum, *(buffer.clone() for buffer in _running_buffers(module)))
        for module in norms
    ]
    was_training = network.training
    try:
        if norms:
            for module in norms:
                module.momentum = 1.0
            network.train()
            with torch.no_grad():
                hidden_features(network, x)
            # A training-mode pass stores the unbiased variance, and normalises with the biased.
            count = len(x)
            for module in norms:
                module.running_var.mul_((count - 1) / count)
        network.eval()
        yield
    finally:
        for module, (momentum, *buffers) in zip(norms, saved, strict=True):
            module.momentum = momentum
            for buffer, value in zip(_running_buffers(module), buffers, strict=True):
                buffer.copy_(value)
        network.train(was_training)


def _running_buffers(module: _BatchNorm) -> tuple[Tensor, Tensor, Tensor]:
    return module.running_mean, module.running_var, module.num_batches_tracked


def _log_histogram(logger: WandbLogger, snapshot: JacobianSnapshot) -> None:
    import wandb

    histogram = wandb.Histogram(snapshot.singular_values)
    logger.log_metrics({"jacobian/singular_values": histogram}, step=snapshot.step)
