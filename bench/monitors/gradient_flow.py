"""Gradient-flow monitor: per-layer gradient norms, forward lengths q_l and saturation.

Definitions (the report tables rely on them):

- ``signal/grad_norm/<layer>``: Frobenius norm of the loss gradient with respect to the
  layer's weight (an RBF layer's centres).
- ``signal/grad_ratio``: first-layer over last-layer gradient norm; 1 is ideal, << 1 means
  vanishing and >> 1 exploding gradients.
- ``signal/q/<layer>``: mean squared pre-activation q_l of each hidden layer (Poole et al.
  2016, arXiv:1606.05340).
- ``signal/saturation/<layer>``: fraction of units with |phi'(h)| below ``threshold`` times
  phi's maximum slope.

During training the monitor samples the current training batch every ``every_n_steps``
optimiser steps, which costs no extra forward pass. At the start and the end of training it
also measures a fixed probe batch (the first validation batch), so the two snapshots that
runs are compared by see the same inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from models.activations import Activation, max_slope

log = logging.getLogger(__name__)


@dataclass
class SignalSnapshot:
    """Per-layer signal statistics at one optimiser step."""

    step: int
    grad_norm: dict[str, float]
    q: dict[str, float]
    saturation: dict[str, float]

    @property
    def grad_ratio(self) -> float:
        norms = list(self.grad_norm.values())
        return norms[0] / norms[-1] if norms[-1] > 0 else float("inf")

    @property
    def mean_saturation(self) -> float:
        values = list(self.saturation.values())
        return sum(values) / len(values) if values else 0.0

    def metrics(self, prefix: str = "signal") -> dict[str, float]:
        """Return flat metric keys such as ``signal/grad_norm/layer_01``."""
        flat = {f"{prefix}/grad_ratio": self.grad_ratio}
        for quantity in ("grad_norm", "q", "saturation"):
            for layer, value in getattr(self, quantity).items():
                flat[f"{prefix}/{quantity}/{layer}"] = value
        return flat

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "grad_ratio": self.grad_ratio,
            "mean_saturation": self.mean_saturation,
            "grad_norm": self.grad_norm,
            "q": self.q,
            "saturation": self.saturation,
        }


@dataclass
class _Capture:
    """Pre-activations gathered by forward hooks during one forward pass.

    ``phi_inputs`` contains alpha * h + beta, the argument of phi, per activation site, and
    ``units`` the site's module. Slopes are then computed in one autograd call per
    nonlinearity rather than one per layer.
    """

    q: list[Tensor] = field(default_factory=list)
    phi_inputs: list[Tensor] = field(default_factory=list)
    units: list[Activation] = field(default_factory=list)

    def saturation(self, threshold: float, max_slopes: dict[str, float]) -> list[Tensor]:
        """Return per site the fraction of units with |phi'| below threshold * max |phi'|."""
        fractions: list[Tensor | None] = [None] * len(self.units)
        names = [unit.nonlinearity.name for unit in self.units]
        for name in dict.fromkeys(names):
            sites = [index for index, site_name in enumerate(names) if site_name == name]
            flat = torch.cat([self.phi_inputs[index].flatten() for index in sites])
            with torch.enable_grad():
                flat.requires_grad_(True)
                (slope,) = torch.autograd.grad(self.units[sites[0]].phi(flat).sum(), flat)
            saturated = (slope.abs() < threshold * max_slopes[name]).float()
            sizes = [self.phi_inputs[index].numel() for index in sites]
            for index, part in zip(sites, saturated.split(sizes), strict=True):
                fractions[index] = part.mean()
        return fractions  # type: ignore[return-value]


class GradientFlowMonitor(pl.Callback):
    """Measure gradient flow at initialisation, every N steps and at the end of training.

    Works with any LightningModule whose ``network`` has ``weight_layers()`` (ordered
    input to output) and whose ``loss(batch)`` returns the loss first.

    Args:
        every_n_steps: optimiser steps between two samples of the training batch.
        saturation_threshold: a unit counts as saturated where |phi'(h)| is below this
            fraction of phi's maximum slope.
    """

    def __init__(self, every_n_steps: int = 25, saturation_threshold: float = 0.05) -> None:
        if every_n_steps < 1:
            raise ValueError(
                f"every_n_steps must be >= 1, got {every_n_steps}; pass --monitor.every_n_steps "
                "1 or more"
            )
        if not 0.0 < saturation_threshold < 1.0:
            raise ValueError(f"saturation_threshold must lie in (0, 1), got {saturation_threshold}")
        self.every_n_steps = every_n_steps
        self.saturation_threshold = saturation_threshold
        self.series: list[SignalSnapshot] = []
        self.init: SignalSnapshot | None = None
        self.end: SignalSnapshot | None = None
        self._capture: _Capture | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._max_slope: dict[str, float] = {}
        self._sampled_step = -1

    # -- hooks ------------------------------------------------------------------------

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.series, self.init, self.end = [], None, None
        self._sampled_step = -1
        for module in pl_module.modules():
            if isinstance(module, Activation):
                name = module.nonlinearity.name
                if name not in self._max_slope:
                    self._max_slope[name] = max_slope(module.phi)
                self._handles.append(module.register_forward_hook(self._record_activation))

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.init = self.measure_probe(trainer, pl_module)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self._sampled_step:
            self._capture = _Capture()

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._capture is None:
            return
        layers = _weight_layers(pl_module)
        grads = [layer.weight.grad for _, layer in layers]
        if any(grad is None for grad in grads):
            self._capture = None
            return
        snapshot = self._snapshot(trainer.global_step, layers, grads)
        self._sampled_step = trainer.global_step
        self.series.append(snapshot)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(snapshot.metrics(), step=trainer.global_step)

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # A skipped step (non-finite loss, accumulation) leaves a capture without gradients.
        self._capture = None

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = self.measure_probe(trainer, pl_module)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._capture = None

    # -- measurement ------------------------------------------------------------------

    def measure_probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> SignalSnapshot:
        """Measure one forward and backward pass on the fixed probe batch.

        The gradients go through ``torch.autograd.grad``, so the parameters' ``.grad`` and
        the optimiser are untouched; buffers (normalisation running statistics) are
        restored afterwards.
        """
        x, y = _probe_batch(trainer)
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        layers = _weight_layers(pl_module)
        buffers = {name: buffer.clone() for name, buffer in pl_module.named_buffers()}
        was_training = pl_module.training
        pl_module.train()
        self._capture = _Capture()
        try:
            with torch.enable_grad():
                loss = pl_module.loss((x, y))[0]
                grads = torch.autograd.grad(loss, [layer.weight for _, layer in layers])
            return self._snapshot(trainer.global_step, layers, list(grads))
        finally:
            self._capture = None
            pl_module.train(was_training)
            with torch.no_grad():
                for name, buffer in pl_module.named_buffers():
                    buffer.copy_(buffers[name])

    def _snapshot(
        self, step: int, layers: list[tuple[str, nn.Module]], grads: list[Tensor]
    ) -> SignalSnapshot:
        capture = self._capture
        assert capture is not None
        self._capture = None
        norms = [torch.linalg.vector_norm(grad.detach()) for grad in grads]
        saturation = capture.saturation(self.saturation_threshold, self._max_slope)
        # One transfer to the host for all statistics of this snapshot.
        values = torch.stack(norms + capture.q + saturation).tolist()
        depth, sites = len(norms), len(capture.q)
        hidden_names = [name for name, _ in layers[:sites]]
        return SignalSnapshot(
            step=step,
            grad_norm=dict(zip([name for name, _ in layers], values[:depth], strict=True)),
            q=dict(zip(hidden_names, values[depth : depth + sites], strict=True)),
            saturation=dict(zip(hidden_names, values[depth + sites :], strict=True)),
        )

    def _record_activation(self, module: Activation, inputs: tuple[Tensor, ...], output: Tensor):
        # Only the first forward pass of a step is measured: a regulariser that runs the
        # network again (the Jacobian penalty) must not add a second set of sites.
        if self._capture is None or len(self._capture.q) >= len(self._handles):
            return
        h = module.preactivation(inputs[0]).detach()
        self._capture.q.append(h.float().pow(2).mean())
        self._capture.phi_inputs.append(module.alpha * h + module.beta)
        self._capture.units.append(module)


def _weight_layers(pl_module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
    network = getattr(pl_module, "network", None)
    if network is None or not hasattr(network, "weight_layers"):
        raise TypeError(
            f"{type(pl_module).__name__} has no network.weight_layers(); GradientFlowMonitor "
            "needs the ordered weight layers to measure gradient flow"
        )
    return network.weight_layers()


def _probe_batch(trainer: pl.Trainer) -> tuple[Tensor, Tensor]:
    datamodule = trainer.datamodule
    if datamodule is not None:
        # A fresh validation loader does not shuffle, so the probe batch is fixed and
        # drawing it leaves the training loader's random stream alone.
        return next(iter(datamodule.val_dataloader()))
    return next(iter(trainer.train_dataloader))
