"""Residual blocks h_{l+1} = h_l + a * f(h_l) with a fixed or learnable branch scale a.

* ``fixed``: a = 1 / sqrt(number of blocks), so the branches together add a bounded amount
  of variance however deep the network is.
* ``skipinit``: learnable scalar a starting at 0 (De & Smith 2020, "Batch normalization biases
  residual blocks towards the identity function in deep networks", arXiv:2002.10444). It
  multiplies the branch, normalisation included, before the sum, and was introduced to replace
  batch normalisation's down-scaling of the branch in a normalised residual network.
* ``rezero``: the same learnable scalar starting at 0 (Bachlechner et al. 2020, "ReZero is all
  you need", arXiv:2003.04887), proposed for networks with no normalisation at all.

The two learnable variants compute the same function; they differ in the setting they come
from, so the suite keeps both names and a table can pair ``skipinit`` with a norm and
``rezero`` without one. At initialisation both networks are the identity on the residual
stream, so the kernel shape that DKS/TAT aim at is met only once a has grown: the transform
solve assumes a = 1 / sqrt(number of blocks) for them (``shaping_scale2``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

RESIDUALS = ("none", "fixed", "skipinit", "rezero")
BRANCH_LAYERS = (1, 2)


def check_residual(residual: str, branch: int, depth: int) -> int:
    """Return the number of residual blocks, or raise ValueError for a bad combination.

    The input layer and the readout stay outside the blocks (their widths differ from the
    residual stream), so ``depth - 2`` weight layers are shared among blocks of ``branch``.
    """
    if residual not in RESIDUALS:
        raise ValueError(f"unknown residual {residual!r}; choose one of {', '.join(RESIDUALS)}")
    if branch not in BRANCH_LAYERS:
        raise ValueError(
            f"residual_branch must be 1 or 2 (weight layers per residual branch), got {branch!r}"
        )
    if residual == "none":
        return 0
    inner = depth - 2
    if inner < branch or inner % branch:
        raise ValueError(
            f"residual {residual!r} with residual_branch {branch} needs depth - 2 (the layers "
            f"between the input layer and the readout) to be a positive multiple of {branch}, "
            f"got depth {depth}; choose depth = 2 + {branch} * blocks"
        )
    return inner // branch


def shaping_scale2(residual: str, blocks: int) -> float:
    """Return a^2, the branch scale at which activation transforms shape the kernel."""
    return 0.0 if residual == "none" else 1.0 / blocks


class ResidualBlock(nn.Module):
    """h + a * branch(h), with a fixed (``fixed``) or learnable from 0 (``skipinit``, ``rezero``).

    Args:
        branch: the branch f, mapping the stream to a tensor of the same shape.
        residual: ``fixed``, ``skipinit`` or ``rezero``.
        blocks: the number of blocks in the network (sets a for ``fixed``).
    """

    def __init__(self, branch: nn.Module, residual: str, blocks: int) -> None:
        super().__init__()
        self.branch = branch
        self.residual = residual
        if residual == "fixed":
            self.register_buffer("scale", torch.tensor(1.0 / math.sqrt(blocks)))
        elif residual in ("skipinit", "rezero"):
            self.scale = nn.Parameter(torch.zeros(()))
        else:
            raise ValueError(f"ResidualBlock needs fixed, skipinit or rezero, got {residual!r}")

    def forward(self, h: Tensor) -> Tensor:
        return h + self.scale * self.branch(h)

    def extra_repr(self) -> str:
        return f"{self.residual}"
