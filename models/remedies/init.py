"""Weight initialisations selectable by name (``--model.init``).

Baselines: ``xavier`` (Glorot & Bengio 2010, uniform, gain 1), ``kaiming`` (He et al. 2015,
normal, fan-in, ReLU gain), ``orthogonal`` (Saxe et al. 2014, arXiv:1312.6120, gain 1).

Built on the mean-field theory of ``models.theory``:

* ``critical``: W_ij ~ N(0, sigma_w2 / fan_in) and b_i ~ N(0, sigma_b2), with sigma_w2 the
  critical (edge of chaos, chi_1 = 1) weight variance of phi at the chosen sigma_b2
  (Schoenholz et al. 2017, arXiv:1611.01232).
* ``critical_orthogonal``: W = sqrt(sigma_w2) Q with Q orthogonal and b_i ~ N(0, sigma_b2),
  at the critical point whose fixed point is a chosen q_star (Pennington, Schoenholz & Ganguli
  2017, "Resurrecting the sigmoid in deep learning through dynamical isometry",
  arXiv:1711.04735). ``isometry_point`` explains the choice of (sigma_w2, sigma_b2), and
  ``input_gain2`` the input layer's gain, which puts standardised inputs at q_star.
* ``delta_orthogonal``: for convolutions only, a kernel that is zero except for an
  orthogonal centre tap (Xiao et al. 2018, arXiv:1806.05393); ``delta_orthogonal_``.

Data-driven, run by ``init_from_data`` on a batch once the data is available:

* ``lsuv``: layer-sequential unit variance (Mishkin & Matas 2016, arXiv:1511.06422):
  orthogonal weights, then each layer in forward order is rescaled until its
  pre-activation variance on the batch is 1.
* ``rbf_data``: for Gaussian RBF layers. The centres are sampled without replacement from
  the layer's incoming activations on the batch (plain sampling, no k-means). Every width is
  the median pairwise distance between those activations divided by ``RBF_TARGET_DISTANCE``,
  and the readout gets ``xavier``.

Every initialiser works on PyTorch's [out_features, in_features] weight layout. The
orthogonal ones give all singular values of W one value (1, or sqrt(sigma_w2)), with no
rescaling of non-square layers by in/out; the one exception is the input layer of
``critical_orthogonal``. Inits other than ``critical`` and ``critical_orthogonal`` set
biases to zero.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from models.activations import RBF, Nonlinearity
from models.layers import RBFDistance
from models.theory import chi_1, critical_curve, from_torch, length_map

log = logging.getLogger(__name__)

WeightInit = Callable[[Tensor], None]

CRITICAL = "critical"
CRITICAL_ORTHOGONAL = "critical_orthogonal"
DELTA_ORTHOGONAL = "delta_orthogonal"
LSUV = "lsuv"
RBF_DATA = "rbf_data"
DATA_DRIVEN = (LSUV, RBF_DATA)

# The operating point trades isometry against nonlinearity. A smaller q_star keeps tanh-like
# units nearer their linear range: at depth 50, tanh, the Jacobian singular values have
# std/mean 0.17 at q_star = 1/64 and 0.82 at 0.1 (4.5 with Gaussian weights). But a nearly
# linear network learns little. Test accuracy on MNIST-1D (tanh, depth 100, width 256, 20
# epochs, SGD lr 1e-3, one seed) was 0.48 at 1/64, 0.64 at 0.05, 0.71 at 0.1, 0.68 at 0.15,
# 0.61 at 0.3 and 0.45 at 1, against 0.45 under xavier. Validation accuracy ranks 0.15
# (0.70) above 0.1 (0.68), a difference within one seed's noise.
DEFAULT_Q_STAR = 0.1
# rbf_data sets the width s to (median pairwise distance) / this, so the median scaled
# distance r at initialisation is about 1, where the Gaussian's slope r exp(-r^2 / 2) peaks.
RBF_TARGET_DISTANCE = 1.0
# Examples in the batch that data-driven initialisations read.
DATA_INIT_EXAMPLES = 1024
LSUV_TOLERANCE = 0.01
LSUV_MAX_ITERATIONS = 10


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
NAMES: tuple[str, ...] = (
    *BASELINES,
    CRITICAL,
    CRITICAL_ORTHOGONAL,
    DELTA_ORTHOGONAL,
    LSUV,
    RBF_DATA,
)


@dataclass(frozen=True)
class CriticalPoint:
    """A point on the critical line chi_1 = 1 of one nonlinearity.

    Attributes:
        sigma_w2: weight variance times fan-in.
        sigma_b2: bias variance.
        q_star: fixed point of the length map there (mean squared pre-activation).
    """

    sigma_w2: float
    sigma_b2: float
    q_star: float


def check_init_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a known initialisation."""
    if name not in NAMES:
        raise ValueError(f"unknown init {name!r}; choose one of {', '.join(NAMES)}")


def check_init(
    name: str,
    nonlinearity: Nonlinearity,
    sigma_b2: float = 0.0,
    q_star: float | None = None,
    transform: str = "none",
    norm: str = "none",
    norm_target: float | None = None,
) -> None:
    """Raise ValueError for an unknown init or one that cannot work with the other settings.

    ``critical`` and ``critical_orthogonal`` are also solved here, so a phi without a critical
    point fails at construction. ``norm_target`` set means agnostic_batch ignores sigma_b2.
    """
    check_init_name(name)
    if not math.isfinite(sigma_b2) or sigma_b2 < 0.0:
        raise ValueError(f"sigma_b2 must be finite and >= 0, got {sigma_b2}")
    reads_sigma_b2 = norm == "agnostic_batch" and norm_target is None
    if sigma_b2 != 0.0 and name != CRITICAL and not reads_sigma_b2:
        raise ValueError(
            f"sigma_b2 = {sigma_b2} applies only to init 'critical' and to norm "
            f"'agnostic_batch' without norm_target (init {name!r} sets its own biases); drop "
            "sigma_b2 or use init critical"
        )
    if q_star is not None and name != CRITICAL_ORTHOGONAL:
        raise ValueError(
            f"q_star = {q_star} applies only to init 'critical_orthogonal', not {name!r}; "
            "drop q_star or use init critical_orthogonal"
        )
    if name == DELTA_ORTHOGONAL:
        raise ValueError(
            "init 'delta_orthogonal' initialises convolution kernels [out, in, k, ...] and "
            "this network has only dense layers; use critical_orthogonal, the same recipe "
            "for dense layers"
        )
    _check_layer_type(name, nonlinearity)
    _check_combination(name, transform, norm)
    if name == CRITICAL:
        critical_point(nonlinearity, sigma_b2)
    elif name == CRITICAL_ORTHOGONAL:
        isometry_point(nonlinearity, q_star)


def _check_layer_type(name: str, nonlinearity: Nonlinearity) -> None:
    is_rbf = nonlinearity.name == RBF
    if name == RBF_DATA and not is_rbf:
        raise ValueError(
            f"init 'rbf_data' places the centres of RBF units and activation "
            f"{nonlinearity.name!r} has none; use activation rbf, or init lsuv for data-driven "
            "scaling of any other activation"
        )
    if is_rbf and name in (CRITICAL, CRITICAL_ORTHOGONAL, LSUV):
        raise ValueError(
            f"init {name!r} assumes a linear pre-activation W x + b, but rbf layers compute "
            "a distance to their centres; use init rbf_data"
        )


def _check_combination(name: str, transform: str, norm: str) -> None:
    shaped = name in (CRITICAL, CRITICAL_ORTHOGONAL, *DATA_DRIVEN)
    if shaped and transform != "none":
        raise ValueError(
            f"init {name!r} with transform {transform!r} is invalid: the transform is solved "
            "for weights of variance 1 / fan_in before any data is seen, and this init sets "
            "another scale; use init orthogonal with the transform, or transform none"
        )
    if name == LSUV and norm in ("weight", "scaled_ws"):
        raise ValueError(
            f"init 'lsuv' with norm {norm!r} is invalid: the norm re-standardises every "
            "weight, which undoes LSUV's rescaling; use init orthogonal with this norm"
        )


# --- points on the critical line ---------------------------------------------------------


def critical_point(
    nonlinearity: Nonlinearity, sigma_b2: float = 0.0, init: str = CRITICAL
) -> CriticalPoint:
    """Return the critical (edge of chaos) point of phi at bias variance ``sigma_b2``.

    ``init`` is the initialisation that needs the point, named in the error message.

    Raises:
        ValueError: phi has no critical point at this sigma_b2 (chi_1 < 1 at every fixed
            point); the message names phi, sigma_b2 and what to try.
    """
    phi = from_torch(nonlinearity.phi, nonlinearity.name)
    try:
        curve = critical_curve(phi, np.array([sigma_b2]))
    except ValueError as error:
        raise ValueError(
            f"init {init!r}: activation {nonlinearity.name!r} has no critical point at "
            f"sigma_b2 = {sigma_b2:g}, because chi_1 < 1 at every fixed point q* searched; try "
            f"another sigma_b2 (python -m bench theory "
            f"--activation {nonlinearity.name} lists them), or init lsuv, which needs no "
            "critical point"
        ) from error
    return CriticalPoint(float(curve.sigma_w2[0]), sigma_b2, float(curve.q_star[0]))


def isometry_point(nonlinearity: Nonlinearity, q_star: float | None = None) -> CriticalPoint:
    """Return the point of the critical line whose fixed point of the length map is ``q_star``.

    Pennington et al. 2017 fix the operating point by q_star. At criticality a small q_star
    brings the Jacobian closer to an isometry, because phi' of tanh-like units stays near 1
    on pre-activations of second moment q_star. On the critical line both conditions

        chi_1 = sigma_w2 E[phi'(sqrt(q_star) z)^2] = 1,
        q_star = sigma_w2 E[phi(sqrt(q_star) z)^2] + sigma_b2

    hold, so sigma_w2 = 1 / E[phi'^2] and sigma_b2 = q_star - sigma_w2 E[phi^2] follow in
    closed form. A q_star whose sigma_b2 would be negative is not reachable.

    Args:
        nonlinearity: the activation.
        q_star: the fixed point; None takes ``DEFAULT_Q_STAR`` where it is reachable, else
            the critical q_star at sigma_b2 = 0 (the case for phi(0) != 0, such as sigmoid
            and gaussian).

    Raises:
        ValueError: q_star is not positive and finite, or needs a negative sigma_b2.
    """
    requested = DEFAULT_Q_STAR if q_star is None else q_star
    if not math.isfinite(requested) or requested <= 0.0:
        raise ValueError(f"q_star must be finite and > 0, got {q_star}")
    point = _point_at_q_star(nonlinearity, requested)
    if point.sigma_b2 >= 0.0:
        return point
    lowest = critical_point(nonlinearity, 0.0, init=CRITICAL_ORTHOGONAL)
    if q_star is None:
        log.info(
            "critical_orthogonal: q_star = %g is not reachable for %s, using q_star = %g "
            "(sigma_b2 = 0)",
            requested,
            nonlinearity.name,
            lowest.q_star,
        )
        return lowest
    raise ValueError(
        f"init 'critical_orthogonal': q_star = {q_star:g} needs sigma_b2 = "
        f"{point.sigma_b2:.4g} < 0 for activation {nonlinearity.name!r}; the critical "
        f"q_star at sigma_b2 = 0 is {lowest.q_star:.4g}, so pass a q_star at least that large"
    )


def _point_at_q_star(nonlinearity: Nonlinearity, q_star: float) -> CriticalPoint:
    phi = from_torch(nonlinearity.phi, nonlinearity.name)
    sigma_w2 = 1.0 / float(chi_1(phi, q_star, 1.0))
    sigma_b2 = q_star - sigma_w2 * float(length_map(phi, q_star, 1.0))
    # Rounding leaves |sigma_b2| ~ 1e-16 q_star where the exact value is 0 (relu).
    if abs(sigma_b2) <= 1e-12 * q_star:
        sigma_b2 = 0.0
    return CriticalPoint(sigma_w2, sigma_b2, q_star)


# --- weight initialisers -----------------------------------------------------------------


def scaled_orthogonal_(weight: Tensor, sigma_w2: float = 1.0) -> Tensor:
    """Fill ``weight`` [out, in] with sqrt(sigma_w2) times an orthogonal matrix, in place.

    Every singular value equals sqrt(sigma_w2): orthonormal rows when the layer narrows
    (out <= in), orthonormal columns when it widens, and no in/out rescaling.
    """
    nn.init.orthogonal_(weight)
    with torch.no_grad():
        return weight.mul_(math.sqrt(sigma_w2))


def delta_orthogonal_(weight: Tensor, gain: float = 1.0) -> Tensor:
    """Fill a convolution kernel [out, in, k_1, ..., k_n] with a delta-orthogonal kernel.

    All taps are zero except the centre one (index k // 2 along each spatial axis), which is
    ``gain`` times an orthogonal [out, in] matrix (Xiao et al. 2018, arXiv:1806.05393). The
    convolution then acts on each position like an orthogonal dense layer; at criticality
    gain = sqrt(sigma_w2).

    Raises:
        ValueError: ``weight`` has fewer than 3 dimensions.
    """
    if weight.dim() < 3:
        raise ValueError(
            f"delta_orthogonal_ needs a convolution weight [out, in, k, ...], got shape "
            f"{tuple(weight.shape)}; use scaled_orthogonal_ for a dense weight"
        )
    centre = tuple(size // 2 for size in weight.shape[2:])
    with torch.no_grad():
        weight.zero_()
        tap = torch.empty(weight.shape[:2], dtype=weight.dtype, device=weight.device)
        nn.init.orthogonal_(tap)
        weight[(slice(None), slice(None), *centre)] = gain * tap
    return weight


def apply_init(
    weight_layers: list[nn.Module],
    name: str,
    nonlinearity: Nonlinearity | None = None,
    sigma_b2: float = 0.0,
    q_star: float | None = None,
) -> None:
    """Initialise each layer's ``weight`` and ``bias`` in place.

    For ``lsuv`` this is the orthogonal start and for ``rbf_data`` the readout's xavier
    init; ``init_from_data`` completes both once a data batch is at hand.

    Args:
        weight_layers: modules with a ``weight`` of shape [out_features, in_features]
            (``nn.Linear``, ``RBFDistance`` whose weight is its centres), input to readout.
        name: one of ``NAMES``.
        nonlinearity: the activation; needed by ``critical`` and ``critical_orthogonal``.
        sigma_b2: bias variance of ``critical``.
        q_star: fixed point of ``critical_orthogonal`` (see ``isometry_point``).
    """
    check_init_name(name)
    if name in (CRITICAL, CRITICAL_ORTHOGONAL):
        if nonlinearity is None:
            raise ValueError(f"init {name!r} needs the nonlinearity to solve its critical point")
        _apply_critical(weight_layers, name, nonlinearity, sigma_b2, q_star)
        return
    start = {LSUV: "orthogonal", RBF_DATA: "xavier"}.get(name, name)
    for layer in weight_layers:
        if name == RBF_DATA and isinstance(getattr(layer, "layer", layer), RBFDistance):
            continue  # centres and widths come from data in init_from_data
        BASELINES[start](layer.weight.data)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            nn.init.zeros_(bias)


def _apply_critical(
    weight_layers: list[nn.Module],
    name: str,
    nonlinearity: Nonlinearity,
    sigma_b2: float,
    q_star: float | None,
) -> None:
    if name == CRITICAL:
        point = critical_point(nonlinearity, sigma_b2)
    else:
        point = isometry_point(nonlinearity, q_star)
    for index, layer in enumerate(weight_layers):
        weight = layer.weight.data
        if name == CRITICAL:
            nn.init.normal_(weight, std=math.sqrt(point.sigma_w2 / weight.shape[1]))
        elif index == 0 and len(weight_layers) > 1:
            scaled_orthogonal_(weight, input_gain2(point, *weight.shape))
        else:
            scaled_orthogonal_(weight, point.sigma_w2)
        bias = getattr(layer, "bias", None)
        if bias is not None:
            nn.init.normal_(bias, std=math.sqrt(point.sigma_b2))


def input_gain2(point: CriticalPoint, out_features: int, in_features: int) -> float:
    """Return g^2 for the input layer g Q of ``critical_orthogonal``, so that q^1 = q_star.

    Pennington et al. 2017 analyse a network whose pre-activations sit at q_star from the
    first layer on. The datamodules standardise every input feature (mean square 1), and an
    orthogonal [out, in] layer then gives each unit the mean square g^2 min(1, in / out),
    so g^2 = (q_star - sigma_b2) max(1, out / in) puts q^1 at q_star. Without it the first
    layers of a tanh network at small q_star see q near 1, saturate and shrink the
    Jacobian's small singular values.
    """
    return (point.q_star - point.sigma_b2) * max(1.0, out_features / in_features)


# --- data-driven initialisers ------------------------------------------------------------


def lsuv_(
    network: nn.Module,
    layers: list[nn.Module],
    x: Tensor,
    tolerance: float = LSUV_TOLERANCE,
    max_iterations: int = LSUV_MAX_ITERATIONS,
) -> list[float]:
    """Rescale each layer's weight, in forward order, to unit pre-activation variance on ``x``.

    One forward pass of ``network`` runs with a hook on every layer. The hook divides the
    weight by the standard deviation of the layer's output over the batch (all units and
    examples) and recomputes the output. It stops when the variance is within ``tolerance``
    of 1 or after ``max_iterations`` rescalings, and later layers see the rescaled signal.

    Args:
        network: the model; calling it on ``x`` must run every layer of ``layers``.
        layers: ``nn.Linear`` modules with plain (not reparametrised) weights.
        x: the data batch.
        tolerance: largest accepted |variance - 1|.
        max_iterations: rescalings per layer; a layer still off after them logs a warning.

    Returns:
        The variance each layer's pre-activation reached, in forward order.

    Raises:
        ValueError: a layer's output has zero or non-finite variance on the batch.
    """
    reached: list[float] = []

    def rescale(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        for _ in range(max_iterations):
            variance = output.var().item()
            if abs(variance - 1.0) <= tolerance:
                break
            if not math.isfinite(variance) or variance <= 0.0:
                raise ValueError(
                    f"lsuv: layer {len(reached) + 1} has pre-activation variance {variance} on "
                    "the data batch and cannot be rescaled to 1; check the inputs"
                )
            module.weight.mul_(variance**-0.5)
            output = module.forward(inputs[0])
        else:
            variance = output.var().item()
            if abs(variance - 1.0) > tolerance:
                log.warning(
                    "lsuv: layer %d has variance %.4g after %d rescalings (tolerance %g)",
                    len(reached) + 1,
                    variance,
                    max_iterations,
                    tolerance,
                )
        reached.append(output.var().item())
        return output

    _forward_with_hooks(network, layers, x, rescale)
    return reached


def rbf_data_(network: nn.Module, layers: list[RBFDistance], x: Tensor) -> list[float]:
    """Set RBF centres and widths from each layer's incoming activations on ``x``.

    Layer by layer in forward order, the centres are the incoming activation vectors of
    distinct examples, drawn by ``torch.randperm``. When the batch has fewer examples than
    the layer has units, they are drawn with replacement. Every width is the median pairwise
    distance between the incoming activations divided by ``RBF_TARGET_DISTANCE``.

    Returns:
        The width of each layer, in forward order.

    Raises:
        ValueError: a layer's incoming activations are all equal (median distance 0).
    """
    widths: list[float] = []

    def place(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        incoming = inputs[0].reshape(-1, module.in_features)
        examples = incoming.shape[0]
        if examples >= module.out_features:
            index = torch.randperm(examples)[: module.out_features]
        else:
            index = torch.randint(examples, (module.out_features,))
        median = torch.pdist(incoming).median().item() if examples > 1 else 0.0
        if not median > 0.0:
            raise ValueError(
                f"rbf_data: the activations entering RBF layer {len(widths) + 1} have median "
                f"pairwise distance {median} on the data batch, so no width fits; use a batch "
                "of distinct examples"
            )
        width = median / RBF_TARGET_DISTANCE
        module.centres.copy_(incoming[index.to(incoming.device)])
        module.width = torch.full_like(module.width, width)
        widths.append(width)
        return module.forward(inputs[0])

    _forward_with_hooks(network, layers, x, place)
    return widths


def _forward_with_hooks(network: nn.Module, layers: list[nn.Module], x: Tensor, hook) -> None:
    """Run ``network(x)`` once with ``hook`` on each layer, then restore every buffer.

    The network runs in training mode, as it will train, and the buffers (normalisation
    running statistics) are restored so that this pass leaves no trace but the hooks' edits.
    """
    buffers = {name: buffer.clone() for name, buffer in network.named_buffers()}
    was_training = network.training
    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        network.train()
        with torch.no_grad():
            network(x)
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
        with torch.no_grad():
            for name, buffer in network.named_buffers():
                buffer.copy_(buffers[name])


def init_from_data(name: str, network: nn.Module, layers: list[nn.Module], x: Tensor) -> None:
    """Run the data-driven part of init ``name`` on the batch ``x``; other inits do nothing.

    Args:
        name: the init name.
        network: the model, called once on ``x``.
        layers: the weight-layer modules in forward order, readout included.
        x: the data batch.
    """
    if name == LSUV:
        lsuv_(network, layers, x)
    elif name == RBF_DATA:
        rbf_data_(network, [layer for layer in layers if isinstance(layer, RBFDistance)], x)
