"""The LightningModule that trains any of the suite's networks on a classification task."""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from models.networks import DeepMLP

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


class Classifier(pl.LightningModule):
    """Cross-entropy training of a deep network, with train/val/test accuracy.

    The optimiser comes from the command line (``--optimizer SGD --optimizer.lr 0.01``).
    A training loss that is non-finite or above ``divergence_factor * ln(num_classes)``
    (the chance-level loss) stops the run before the step that would apply it and records
    the global step in ``diverged_at_step``. Cross-entropy with bounded activations can grow
    without ever overflowing, so the finite bound is what catches most divergences.

    Args:
        activation: nonlinearity name or ``package.module:function``.
        depth: number of weight layers, readout included.
        width: units per hidden layer.
        init: weight initialisation name.
        bias: whether linear layers carry a bias.
        input_dim: input features; the CLI links it from the datamodule.
        num_classes: number of classes; the CLI links it from the datamodule.
        divergence_factor: multiple of the chance-level loss above which the run counts as
            diverged.
    """

    def __init__(
        self,
        activation: str = "tanh",
        depth: int = 50,
        width: int = 128,
        init: str = "xavier",
        bias: bool = True,
        input_dim: int = 40,
        num_classes: int = 10,
        divergence_factor: float = 100.0,
    ) -> None:
        super().__init__()
        if not divergence_factor > 1.0:
            raise ValueError(
                f"divergence_factor must be > 1 (a multiple of the chance-level loss), "
                f"got {divergence_factor}"
            )
        self.save_hyperparameters()
        self.network = DeepMLP(
            input_dim=input_dim,
            num_classes=num_classes,
            depth=depth,
            width=width,
            activation=activation,
            init=init,
            bias=bias,
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.accuracy = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in STAGES}
        )
        self.divergence_loss = divergence_factor * math.log(max(num_classes, 2))
        self.diverged_at_step: int | None = None

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Return (loss, logits, targets) for one batch."""
        x, y = batch
        logits = self(x)
        return self.loss_fn(logits, y), logits, y

    def _log_metrics(self, stage: str, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        loss, logits, y = self.loss(batch)
        self._log_metrics(stage, loss, logits, y)
        return loss

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        loss, logits, y = self.loss(batch)
        if not loss.detach().abs() <= self.divergence_loss:
            # Returning None skips backward and the optimiser step, so the weights stay
            # those of the last finite step.
            self.diverged_at_step = self.global_step
            self.trainer.should_stop = True
            log.warning(
                "training loss %s at step %d exceeds %.4g or is not finite: the run "
                "diverged and stops here",
                loss.item(),
                self.global_step,
                self.divergence_loss,
            )
            return None
        self._log_metrics("train", loss, logits, y)
        return loss

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluation_step(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluation_step(batch, "test")

    @property
    def diverged(self) -> bool:
        return self.diverged_at_step is not None
