"""Residual blocks: block counts, the fixed branch scale and identity at initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from models.networks import DeepMLP
from models.remedies.residual import check_residual


def test_check_residual_counts_blocks():
    assert check_residual("fixed", 2, 12) == 5
    assert check_residual("none", 1, 12) == 0


def test_check_residual_rejects_odd_split():
    with pytest.raises(ValueError, match="positive multiple of 2"):
        check_residual("fixed", 2, 11)


def test_fixed_residual_scale_is_inverse_sqrt_blocks():
    network = DeepMLP(40, 10, depth=10, width=16, residual="fixed")
    scales = [block.scale.item() for block in network.blocks]
    assert scales == pytest.approx([1.0 / math.sqrt(8)] * 8, rel=1e-6)


@pytest.mark.parametrize("residual", ["skipinit", "rezero"])
def test_learnable_residual_is_identity_at_init(residual):
    network = DeepMLP(40, 10, depth=8, width=16, residual=residual, residual_branch=2)
    x = torch.randn(5, 40)
    stream = network.hidden[0](x)
    assert torch.equal(_run_blocks(network, stream), stream)
    assert len(network.weight_layers()) == 8
    assert len(network.activations()) == 7


def _run_blocks(network, h):
    for block in network.blocks:
        h = block(h)
    return h
