"""Deep networks built from (activation, depth, width, remedy)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrize

from models.activations import RBF, Activation, Nonlinearity, resolve
from models.layers import RBFDistance
from models.remedies.init import (
    DATA_DRIVEN,
    apply_init,
    check_init,
    check_init_name,
    init_from_data,
)
from models.remedies.normalization import (
    WEIGHT_NORMS,
    WeightView,
    agnostic_moments,
    check_norm,
    check_norm_name,
    make_norm,
    output_standardization,
    reparametrize_weight,
    scaled_ws_gain,
)
from models.remedies.residual import ResidualBlock, check_residual, shaping_scale2
from models.remedies.transforms import (
    NetworkShape,
    check_method,
    check_method_name,
    shape_activations,
)


def _check_positive_int(name: str, value: object, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value!r}")


def check_settings(
    depth: int,
    width: int,
    init: str = "xavier",
    transform: str = "none",
    residual: str = "none",
    residual_branch: int = 1,
    norm: str = "none",
) -> int:
    """Return the number of residual blocks once the activation-independent settings check out.

    Raises ValueError for a setting that is invalid whatever the activation. These checks
    solve no theory and build nothing, so a sweep applies them to every run of its grid
    before the first one starts. Checks of a remedy against the activation run when
    ``DeepMLP`` is built.
    """
    _check_positive_int("depth", depth, "the number of weight layers")
    _check_positive_int("width", width, "units per hidden layer")
    check_init_name(init)
    check_method_name(transform)
    check_norm_name(norm)
    return check_residual(residual, residual_branch, depth)


class HiddenLayer(nn.Module):
    """One hidden layer: weight layer, normalisation, then the activation.

    For ``rbf`` the weight layer is an ``RBFDistance`` and the activation the Gaussian, so
    the pair computes exp(-||x - w_i||^2 / (2 s_i^2)).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        nonlinearity: Nonlinearity,
        bias: bool,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if nonlinearity.name == RBF:
            self.linear: nn.Module = RBFDistance(in_features, out_features)
        else:
            self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm: nn.Module = nn.Identity() if norm is None else norm
        self.activation = Activation(nonlinearity)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.norm(self.linear(x)))


def _weight_holder(layer: nn.Module) -> nn.Module | WeightView:
    """Return the layer, or a view of its free tensor when its weight is reparametrised."""
    return WeightView(layer) if parametrize.is_parametrized(layer, "weight") else layer


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
        transform: activation transform, ``none``, ``dks`` or ``tat``
            (``models.remedies.transforms``), solved for this network's depth and residual
            blocks and set on every activation after the weights are initialised.
        transform_target: the network's C'(1) (zeta, dks) or C''(1) (tau, tat); None for the
            papers' defaults 1.5 and 0.3.
        residual: ``none``, ``fixed``, ``skipinit`` or ``rezero``
            (``models.remedies.residual``). The input layer and the readout stay outside the
            blocks, so depth - 2 must be a multiple of ``residual_branch``.
        residual_branch: weight layers per residual branch, 1 or 2.
        norm: ``none``, ``batch``, ``layer``, ``weight``, ``scaled_ws`` or ``agnostic_batch``
            (``models.remedies.normalization``), in every hidden layer; the readout is plain.
        sigma_b2: bias variance of init ``critical``, which solves the critical sigma_w2 at
            it. Norm ``agnostic_batch`` keeps the pre-activations at the moments of the
            critical point at this sigma_b2, with any init, unless ``norm_target`` is set; it
            needs sigma_b2 > 0 for odd phi (q* is 0 at 0). Other settings reject a non-zero
            value.
        norm_target: norm ``agnostic_batch`` only: zeta > 1, the network's C'(1), for the
            shaped moments (``models.remedies.normalization``); None keeps the mean-field
            critical moments at sigma_b2.
        q_star: fixed point of init ``critical_orthogonal``; None for its default
            (``models.remedies.init.isometry_point``).

    Raises:
        ValueError: depth or width not a positive integer, unknown activation, init,
            transform, residual or norm, or an invalid combination of them (the message names
            the combination and the reason).
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
        transform: str = "none",
        transform_target: float | None = None,
        residual: str = "none",
        residual_branch: int = 1,
        norm: str = "none",
        sigma_b2: float = 0.0,
        q_star: float | None = None,
        norm_target: float | None = None,
    ) -> None:
        super().__init__()
        blocks = check_settings(depth, width, init, transform, residual, residual_branch, norm)
        _check_positive_int("input_dim", input_dim, "input features")
        _check_positive_int("num_classes", num_classes, "outputs")
        nonlinearity = resolve(activation)
        _check_remedies(nonlinearity, transform, norm, norm_target)
        plain_layers = 1 if blocks else depth - 1
        shape = NetworkShape(
            plain_layers, blocks, residual_branch, shaping_scale2(residual, blocks)
        )
        # The solve also checks that agnostic_batch has moments for this phi.
        moments = (
            agnostic_moments(nonlinearity, sigma_b2, norm_target, shape)
            if norm == "agnostic_batch"
            else None
        )
        check_init(init, nonlinearity, sigma_b2, q_star, transform, norm, norm_target)
        self.init = init
        self.norm = norm

        def hidden_layer(fan_in: int) -> HiddenLayer:
            layer_norm = make_norm(norm, width, moments)
            return HiddenLayer(fan_in, width, nonlinearity, bias, layer_norm)

        fan_ins = [input_dim] + [width] * (depth - 2)
        self.hidden = nn.ModuleList(hidden_layer(fan_in) for fan_in in fan_ins[:plain_layers])
        self.blocks = nn.ModuleList(
            ResidualBlock(
                nn.Sequential(*(hidden_layer(width) for _ in range(residual_branch))),
                residual,
                blocks,
            )
            for _ in range(blocks)
        )
        self.readout = nn.Linear(width if depth > 1 else input_dim, num_classes, bias=bias)
        apply_init(
            [module for _, module in self.weight_layers()], init, nonlinearity, sigma_b2, q_star
        )

        layers = self.hidden_layers()
        sites = [(layer.activation, layer.linear) for layer in layers]
        shape_activations(sites, transform, shape, transform_target)
        if moments is not None:
            gamma, delta = output_standardization(nonlinearity, *moments)
            for layer in layers:
                layer.activation.set_transform(1.0, 0.0, gamma, delta)
        if norm in WEIGHT_NORMS:
            self._reparametrize_weights(layers, nonlinearity)

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """Return (name, module) for every weight layer from input to readout.

        Names are ``layer_01`` ... ``layer_<depth>``; they key the per-layer metrics.
        """
        layers = [_weight_holder(layer.linear) for layer in self.hidden_layers()]
        layers.append(self.readout)
        digits = max(2, len(str(len(layers))))
        return [(f"layer_{index:0{digits}d}", layer) for index, layer in enumerate(layers, 1)]

    def activations(self) -> list[Activation]:
        """Return the activation modules in forward order, one per hidden layer."""
        return [layer.activation for layer in self.hidden_layers()]

    @property
    def data_driven(self) -> bool:
        """Whether ``init`` reads data (lsuv, rbf_data) and so needs ``init_from_data``."""
        return self.init in DATA_DRIVEN

    def init_from_data(self, x: Tensor) -> None:
        """Complete a data-driven ``init`` on the input batch ``x``; other inits do nothing."""
        layers = [layer.linear for layer in self.hidden_layers()] + [self.readout]
        init_from_data(self.init, self, layers, x)

    def hidden_layers(self) -> list[HiddenLayer]:
        """Return every hidden layer in forward order, those inside residual branches included."""
        branches = [layer for block in self.blocks for layer in block.branch]
        return [*self.hidden, *branches]

    def _reparametrize_weights(self, layers: list[HiddenLayer], nonlinearity: Nonlinearity) -> None:
        # Layers after the first read phi's output, so scaled WS restores unit variance with
        # 1 / sqrt(Var phi_hat(z)); the first layer reads standardised data and uses gain 1.
        # NOTE: in a residual network a branch reads the residual stream, whose variance is
        # not Var phi_hat(z); scaled WS still uses the phi gain there.
        for index, layer in enumerate(layers):
            gain = 1.0 if index == 0 else scaled_ws_gain(layer.activation, nonlinearity.name)
            reparametrize_weight(layer.linear, self.norm, gain)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = layer(x)
        for block in self.blocks:
            x = block(x)
        return self.readout(x)


def _check_remedies(
    nonlinearity: Nonlinearity, transform: str, norm: str, norm_target: float | None
) -> None:
    """Raise ValueError for an unknown transform or norm, or a combination that cannot work."""
    check_method(transform, nonlinearity)
    check_norm(norm, nonlinearity, norm_target)
    if transform != "none" and norm == "agnostic_batch":
        raise ValueError(
            f"transform {transform!r} with norm 'agnostic_batch' is invalid: the transform "
            "shapes phi_hat for pre-activations of second moment 1, while agnostic_batch holds "
            "them at moments of its own; use one of the two (agnostic_batch with norm_target "
            "is DKS through batch statistics), or norm batch with the transform"
        )
