"""Deep networks built from (activation, depth, width, remedy)."""

from __future__ import annotations

from torch import Tensor, nn

from models.activations import RBF, Activation, Nonlinearity, resolve
from models.layers import RBFDistance
from models.remedies.init import apply_init, check_init_name


def _check_positive_int(name: str, value: object, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value!r}")


class HiddenLayer(nn.Module):
    """One hidden layer: weight layer, normalisation, then the activation.

    For ``rbf`` the weight layer is an ``RBFDistance`` and the activation the Gaussian, so
    the pair computes exp(-||x - w_i||^2 / (2 s_i^2)).
    """

    def __init__(
        self, in_features: int, out_features: int, nonlinearity: Nonlinearity, bias: bool
    ) -> None:
        super().__init__()
        if nonlinearity.name == RBF:
            self.linear: nn.Module = RBFDistance(in_features, out_features)
        else:
            self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm: nn.Module = nn.Identity()
        self.activation = Activation(nonlinearity)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.norm(self.linear(x)))


class DeepMLP(nn.Module):
    """Fully connected network of ``depth`` weight layers: depth - 1 hidden layers of
    ``width`` units and a linear readout.

    Args:
        input_dim: number of input features.
        num_classes: number of outputs (logits).
        depth: number of weight layers, readout included (1 is a linear model).
        width: units per hidden layer.
        activation: a registry name (``models.activations.NAMES``) or
            ``package.module:function``.
        init: initialisation name (``models.remedies.init.NAMES``).
        bias: whether linear layers carry a bias.

    Raises:
        ValueError: depth or width not a positive integer, unknown activation or init.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        depth: int = 20,
        width: int = 128,
        activation: str = "tanh",
        init: str = "xavier",
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("depth", depth, "the number of weight layers")
        _check_positive_int("width", width, "units per hidden layer")
        _check_positive_int("input_dim", input_dim, "input features")
        _check_positive_int("num_classes", num_classes, "outputs")
        check_init_name(init)
        nonlinearity = resolve(activation)

        fan_ins = [input_dim] + [width] * (depth - 2)
        self.hidden = nn.ModuleList(
            HiddenLayer(fan_in, width, nonlinearity, bias) for fan_in in fan_ins[: depth - 1]
        )
        self.readout = nn.Linear(width if depth > 1 else input_dim, num_classes, bias=bias)
        apply_init([module for _, module in self.weight_layers()], init)

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """Return (name, module) for every weight layer from input to readout.

        Names are ``layer_01`` ... ``layer_<depth>``; they key the per-layer metrics.
        """
        layers = [layer.linear for layer in self.hidden] + [self.readout]
        digits = max(2, len(str(len(layers))))
        return [(f"layer_{index:0{digits}d}", layer) for index, layer in enumerate(layers, 1)]

    def activations(self) -> list[Activation]:
        """Return the activation modules in forward order, one per hidden layer."""
        return [layer.activation for layer in self.hidden]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = layer(x)
        return self.readout(x)
