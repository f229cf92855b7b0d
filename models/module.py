"""The LightningModule that trains any of the suite's networks on a classification task."""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from models.networks import DeepMLP
from models.remedies.init import DATA_INIT_EXAMPLES
from models.remedies.regularizers import Regularizer

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
        init: weight initialisation name. Data-driven inits (lsuv, rbf_data) run in
            ``on_fit_start`` on the first training examples.
        bias: whether linear layers carry a bias.
        transform: activation transform: ``none``, ``dks`` or ``tat`` (phi becomes
            gamma * (phi(alpha x + beta) + delta), solved for this network).
        transform_target: DKS's network C'(1) (zeta, default 1.5) or TAT's network C''(1)
            (tau, default 0.3); None takes the default.
        residual: ``none``, ``fixed`` (branch scaled by 1/sqrt(blocks)), ``skipinit`` or
            ``rezero`` (learnable branch scale starting at 0).
        residual_branch: hidden layers per residual branch, 1 or 2.
        norm: ``none``, ``batch``, ``layer``, ``weight``, ``scaled_ws`` or
            ``agnostic_batch`` (pre-activations held at moments chosen for phi).
        sigma_b2: bias variance of init ``critical``, which also sets the critical point
            that norm ``agnostic_batch`` holds when ``norm_target`` is None.
        q_star: fixed point q* of init ``critical_orthogonal``; None takes its default.
        norm_target: norm ``agnostic_batch`` only: the network's C'(1) (zeta > 1) at which
            the held moments shape the kernel, as DKS does; None keeps phi's mean-field
            critical moments at sigma_b2.
        input_dim: input features; the CLI links it from the datamodule.
        num_classes: number of classes; the CLI links it from the datamodule.
        divergence_factor: multiple of the chance-level loss above which the run counts as
            diverged.
        regularizer: ``none``, ``orthogonality``, ``jacobian`` or ``agc``
            (``models.remedies.regularizers``); a penalty is added to the training loss and
            logged as ``train/reg_loss``, while ``agc`` clips gradients before each step.
        regularizer_weight: the penalty's weight, or the clipping factor for ``agc``; None
            takes the regulariser's default.
    """

    def __init__(
        self,
        activation: str = "tanh",
        depth: int = 50,
        width: int = 128,
        init: str = "xavier",
        bias: bool = True,
        transform: str = "none",
        transform_target: float | None = None,
        residual: str = "none",
        residual_branch: int = 1,
        norm: str = "none",
        sigma_b2: float = 0.0,
        q_star: float | None = None,
        norm_target: float | None = None,
        input_dim: int = 40,
        num_classes: int = 10,
        divergence_factor: float = 100.0,
        regularizer: str = "none",
        regularizer_weight: float | None = None,
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
            transform=transform,
            transform_target=transform_target,
            residual=residual,
            residual_branch=residual_branch,
            norm=norm,
            sigma_b2=sigma_b2,
            q_star=q_star,
            norm_target=norm_target,
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.regularizer = Regularizer(regularizer, regularizer_weight)
        self.regularizer.check_network(self.network)
        self.accuracy = nn.ModuleDict(
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro") for stage in STAGES}
        )
        self.divergence_loss = divergence_factor * math.log(max(num_classes, 2))
        self.diverged_at_step: int | None = None
        self._initialised_from_data = False

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    @override
    def on_fit_start(self) -> None:
        # Lightning calls this after the datamodule's setup and the callbacks' on_fit_start,
        # and before on_train_start, where the monitors measure the network at init. A run
        # resumed from a checkpoint keeps the restored weights.
        if not self.network.data_driven or self._initialised_from_data:
            return
        if self.trainer.ckpt_path is not None:
            return
        x = _init_batch(self.trainer).to(self.device)
        # The forked generator lets rbf_data sample centres without shifting the global
        # random stream, which the training loader's shuffling draws from next.
        with torch.random.fork_rng(devices=[]):
            self.network.init_from_data(x)
        self._initialised_from_data = True

    def loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Return (loss, logits, targets) for one batch."""
        x, y = batch
        logits = self(x)
        return self.loss_fn(logits, y), logits, y

    def _log_metrics(self, stage: str, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        accuracy = self.accuracy[f"{stage}_acc"]
        accuracy(logits, y)
        on_step = stage == "train"
        # sync_dist averages the loss over DDP ranks (one scalar all-reduce per logged
        # value); the accuracy metric syncs its own counts.
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True
        )
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        loss, logits, y = self.loss(batch)
        self._log_metrics(stage, loss, logits, y)
        return loss

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        loss, logits, y = self.loss(batch)
        diverging = not loss.detach().abs() <= self.divergence_loss
        # Under DDP every rank must skip the step together, or the ranks that run
        # backward wait forever in the gradient all-reduce; a single process skips the
        # collective.
        if self.trainer.world_size > 1:
            diverging = self.trainer.strategy.reduce_boolean_decision(diverging, all=False)
        if diverging:
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
        penalty = self.regularizer.penalty(self.network, batch[0])
        if penalty is None:
            return loss
        self.log("train/reg_loss", penalty, on_step=True, on_epoch=True)
        return loss + penalty

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluation_step(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluation_step(batch, "test")

    @override
    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning calls this after on_before_optimizer_step, so gradient monitors see the
        # unclipped gradients; AGC runs first, then any --trainer.gradient_clip_val.
        self.regularizer.clip_gradients(self.network)
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    @property
    def diverged(self) -> bool:
        return self.diverged_at_step is not None


def _init_batch(trainer: pl.Trainer) -> Tensor:
    """Return the inputs of the first ``DATA_INIT_EXAMPLES`` training examples.

    Reading the training set by index leaves the training loader's shuffling untouched.

    Raises:
        ValueError: the trainer has no datamodule with a ``train_set``.
    """
    train_set = getattr(trainer.datamodule, "train_set", None)
    if train_set is None:
        raise ValueError(
            "data-driven inits (lsuv, rbf_data) read the first examples of the datamodule's "
            "train_set, and this trainer has none; fit with a datamodule that sets train_set "
            "in setup, or choose another init"
        )
    count = min(len(train_set), DATA_INIT_EXAMPLES)
    inputs, _ = default_collate([train_set[index] for index in range(count)])
    return inputs
