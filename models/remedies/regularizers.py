"""Regularisers that keep the signal flowing: soft orthogonality, Jacobian isometry, AGC.

- ``orthogonality``: the soft penalty sum_l ||W_l^T W_l - I||_F^2 over the hidden weight
  layers (Bansal et al. 2018, "Can We Gain More from Orthogonality Regularizations in
  Training Deep CNNs?", arXiv:1810.09102).
- ``jacobian``: a stochastic estimate of ||J^T J - I||_F^2 for the Jacobian J of the map
  from the input to the last hidden layer, which pushes that map towards dynamical
  isometry (Pennington et al. 2017, arXiv:1711.04735, for why isometry matters).
- ``agc``: adaptive gradient clipping, Brock et al. 2021, "High-Performance Large-Scale
  Image Recognition Without Normalization", arXiv:2102.06171, through timm's
  ``adaptive_clip_grad`` (timm 1.0). Every weight layer except the readout is clipped.

The Jacobian is taken up to the last hidden layer, not the logits, because the readout maps
``width`` units to ``num_classes`` (10) logits: a 10-row Jacobian has rank at most 10 and
cannot be an isometry of a 40-dimensional input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.utils.agc import adaptive_clip_grad
from torch import Tensor, nn
from torch.func import jvp, vjp

NONE = "none"
ORTHOGONALITY = "orthogonality"
JACOBIAN = "jacobian"
AGC = "agc"
NAMES = (NONE, ORTHOGONALITY, JACOBIAN, AGC)

# Default strength of each regulariser: the penalty's weight in the loss, or for agc the
# clipping factor lambda (Brock et al. 2021 use 0.01 to 0.16 depending on batch size).
DEFAULT_WEIGHTS = {NONE: 0.0, ORTHOGONALITY: 1e-3, JACOBIAN: 1e-2, AGC: 0.01}


def hidden_features(network: nn.Module, x: Tensor) -> Tensor:
    """Return the last hidden layer's output: the network without its readout.

    Uses ``network.features(x)`` where the network defines it, else runs ``DeepMLP``'s
    plain hidden layers and then its residual blocks, as ``DeepMLP.forward`` does.
    """
    features = getattr(network, "features", None)
    if callable(features):
        return features(x)
    hidden = getattr(network, "hidden", None)
    if hidden is None:
        raise TypeError(
            f"{type(network).__name__} has neither features() nor hidden layers; the "
            "Jacobian regulariser and monitor need the map from input to last hidden layer"
        )
    for layer in [*hidden, *getattr(network, "blocks", [])]:
        x = layer(x)
    return x


def orthogonality_penalty(weights: list[Tensor]) -> Tensor:
    """Return sum_l ||G_l - I||_F^2, with G_l the Gram matrix of W_l on its smaller side.

    For a weight of shape [out, in] with out >= in, G = W^T W ([in, in]), which is I when
    the columns are orthonormal (the layer preserves norms). With out < in, G = W W^T, since
    W^T W has rank at most ``out`` and cannot equal I.
    """
    if not weights:
        raise ValueError("orthogonality_penalty needs at least one weight matrix, got none")
    total = weights[0].new_zeros(())
    for weight in weights:
        matrix = weight.flatten(1)
        out_features, in_features = matrix.shape
        gram = matrix.T @ matrix if out_features >= in_features else matrix @ matrix.T
        identity = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        total = total + (gram - identity).pow(2).sum()
    return total


def jacobian_isometry_penalty(function: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Return an unbiased estimate of the mean over examples of ||J^T J - I||_F^2.

    J is the Jacobian of ``function`` at each example of ``x`` [batch, in]. For v with
    E[v v^T] = I, E||(J^T J - I) v||^2 = ||J^T J - I||_F^2 (Hutchinson's trick), and
    J^T J v costs one forward-mode (jvp) and one reverse-mode (vjp) product. Each example
    draws its own Gaussian v, and ``function`` must treat examples independently, so the
    batched products are per-example products. The result is differentiable with respect
    to the parameters ``function`` uses.

    With out < in (a hidden layer narrower than the input), J^T J has rank at most ``out``
    and the penalty cannot reach zero; the regulariser then still pulls J's nonzero singular
    values towards 1.
    """
    tangent = torch.randn_like(x)
    _, jacobian_v = jvp(function, (x,), (tangent,))
    _, pullback = vjp(function, x)
    (gram_v,) = pullback(jacobian_v)
    return (gram_v - tangent).pow(2).sum(dim=1).mean()


class Regularizer:
    """One regulariser chosen by name: a loss penalty, a gradient clip, or neither.

    Args:
        name: one of ``NAMES``.
        weight: the penalty's weight in the loss, or for ``agc`` the clipping factor
            lambda; None takes ``DEFAULT_WEIGHTS[name]``.
        probe_size: examples of each training batch that the ``jacobian`` estimate uses.

    Raises:
        ValueError: unknown name, negative weight, or probe_size below 1.
    """

    def __init__(self, name: str = NONE, weight: float | None = None, probe_size: int = 16):
        if name not in NAMES:
            raise ValueError(
                f"regularizer must be one of {', '.join(NAMES)}, got {name!r}; pick one of "
                "those names"
            )
        weight = DEFAULT_WEIGHTS[name] if weight is None else float(weight)
        if not weight >= 0.0:
            raise ValueError(
                f"regularizer_weight must be >= 0, got {weight}; pass a non-negative value or "
                "leave it unset for the default"
            )
        if name == AGC and weight == 0.0:
            raise ValueError(
                "regularizer_weight is the AGC clipping factor and must be > 0, got 0.0; "
                f"pass e.g. {DEFAULT_WEIGHTS[AGC]}"
            )
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {probe_size}")
        self.name = name
        self.weight = weight
        self.probe_size = probe_size

    @property
    def adds_penalty(self) -> bool:
        return self.name in (ORTHOGONALITY, JACOBIAN)

    def check_network(self, network: nn.Module) -> None:
        """Raise ValueError when this regulariser has nothing to act on in ``network``.

        The orthogonality penalty acts on hidden linear weights, which an RBF network (its
        hidden weights are centres) does not have.
        """
        if self.name == ORTHOGONALITY and not _hidden_linear_weights(network):
            raise ValueError(
                "regularizer 'orthogonality' needs hidden linear layers, and this network has "
                "none (an rbf network's hidden weights are centres); use regularizer jacobian "
                "or none"
            )

    def penalty(self, network: nn.Module, x: Tensor) -> Tensor | None:
        """Return the weighted penalty for this batch, or None for a non-penalty choice."""
        if self.name == ORTHOGONALITY:
            return self.weight * orthogonality_penalty(_hidden_linear_weights(network))
        if self.name == JACOBIAN:
            probe = x[: self.probe_size].flatten(1)
            shape = (-1, *x.shape[1:])

            def function(inputs: Tensor) -> Tensor:
                return hidden_features(network, inputs.reshape(shape)).flatten(1)

            return self.weight * jacobian_isometry_penalty(function, probe)
        return None

    def clip_gradients(self, network: nn.Module) -> None:
        """Clip gradients unit-wise with AGC when chosen; do nothing otherwise.

        The readout is left unclipped, as Brock et al. 2021 recommend for the final layer.
        """
        if self.name != AGC:
            return
        readout = {id(p) for p in _readout(network).parameters()}
        params = [p for p in network.parameters() if id(p) not in readout]
        adaptive_clip_grad(params, clip_factor=self.weight)


def _readout(network: nn.Module) -> nn.Module:
    return network.readout


def _hidden_linear_weights(network: nn.Module) -> list[Tensor]:
    """Return the effective weights of the linear hidden layers, in forward order.

    RBF centres are left out because they are points, not a linear map. For a
    reparametrised weight (weight norm, scaled WS) ``layer.weight`` is the weight the
    forward pass uses, so that is the matrix the penalty keeps orthogonal.
    """
    return [
        layer.linear.weight
        for layer in network.hidden_layers()
        if isinstance(layer.linear, nn.Linear)
    ]
