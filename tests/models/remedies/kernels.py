"""The network's C'(1) measured by finite difference, for tests of kernel shaping."""

from __future__ import annotations

import torch

from models.networks import DeepMLP


def network_c_slope(
    network: DeepMLP, width: int, eps: float = 1e-3, pairs: int = 64, one_batch: bool = False
) -> float:
    """Return (1 - c_out) / (1 - c_in) at the last hidden layer for inputs of q = 1, c = 1 - eps.

    With ``one_batch`` both inputs of every pair go through one forward pass, and the outputs
    are centred over that batch before their correlation is taken, as the next layer of a
    batch-normalised network reads them. Otherwise each input of a pair is a separate batch.
    """
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(pairs, width, generator=generator, dtype=torch.float64)
    noise = torch.randn(pairs, width, generator=generator, dtype=torch.float64)
    noise -= (noise * x).sum(1, keepdim=True) / (x * x).sum(1, keepdim=True) * x
    x = x / x.norm(dim=1, keepdim=True) * width**0.5
    noise = noise / noise.norm(dim=1, keepdim=True) * width**0.5
    x2 = (1.0 - eps) * x + (1.0 - (1.0 - eps) ** 2) ** 0.5 * noise
    with torch.no_grad():
        if one_batch:
            h = _hidden(network, torch.cat([x, x2]))
            h = h - h.mean(0)
            a, b = h[:pairs], h[pairs:]
        else:
            a, b = _hidden(network, x), _hidden(network, x2)
    c_out = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return float((1.0 - c_out.mean()) / eps)


def _hidden(network: DeepMLP, h: torch.Tensor) -> torch.Tensor:
    for layer in network.hidden:
        h = layer(h)
    return h
