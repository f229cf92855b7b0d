"""Weight initialisations selectable by name (``--model.init``).

Baselines: ``xavier`` (Glorot & Bengio 2010, uniform, gain 1), ``kaiming`` (He et al. 2015,
normal, fan-in, ReLU gain), ``orthogonal`` (Saxe et al. 2014, arXiv:1312.6120, gain 1).
Every initialiser works on PyTorch's [out_features, in_features] weight layout and sets
biases to zero.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

WeightInit = Callable[[Tensor], None]


def _xavier(weight: Tensor) -> None:
    nn.init.xavier_uniform_(weight)


def _kaiming(weight: Tensor) -> None:
    nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


def _orthogonal(weight: Tensor) -> None:
    # torch's orthogonal_ orthogonalises the smaller of the two dimensions, so a
    # non-square [out, in] weight gets orthonormal rows or columns without rescaling.
    nn.init.orthogonal_(weight)


BASELINES: dict[str, WeightInit] = {
    "xavier": _xavier,
    "kaiming": _kaiming,
    "orthogonal": _orthogonal,
}
NAMES: tuple[str, ...] = tuple(BASELINES)


def check_init_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a known initialisation."""
    if name not in NAMES:
        raise ValueError(f"unknown init {name!r}; choose one of {', '.join(NAMES)}")


def apply_init(weight_layers: list[nn.Module], name: str) -> None:
    """Initialise each layer's ``weight`` in place and zero its bias.

    Args:
        weight_layers: modules with a ``weight`` of shape [out_features, in_features]
            (``nn.Linear``, ``RBFDistance`` whose weight is its centres).
        name: one of ``NAMES``.
    """
    check_init_name(name)
    init = BASELINES[name]
    for layer in weight_layers:
        init(layer.weight.data)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            nn.init.zeros_(bias)
