"""Sketches of module outputs for profiling: a fixed, seeded random projection of every token's channels.

A module output D (B, N, C) is profiled through its sketch S = D P (B, N, d): the same Gaussian matrix
P (C, d), entries N(0, 1/d), multiplies every token of every step and layer whose output has width C (one matrix
per width, drawn from a CPU generator seeded with ``(seed, C)``, so every device and every run gets the same one).
Because P acts on each token alone, SODA's token mix survives it exactly: the sketch of
M_r D[t] + (1 - M_r) D[t-k] is M_r S[t] + (1 - M_r) S[t-k], so E_p is computed in the sketch space with the very
same per-token sums as E_c. A width C <= d is kept as it is (an identity "sketch": exact, and no larger).

The estimator of E_c = 1 - cos(a, b) (a = D[t-k], b = D[t] flattened) is 1 - cos(Sa, Sb). Write a = alpha b + e
with e orthogonal to b. For small errors 1 - cos(a, b) = |e|^2 / (2 alpha^2 |b|^2) (1 + O(|e|^2/|a|^2)), and,
because Sa = alpha Sb + Se exactly (linearity), the sketched value is
    1 - cos(Sa, Sb) = |Se|^2 (1 - cos^2(Se, Sb)) / (2 alpha^2 |Sb|^2).
The large common part alpha b cancels *before* anything is estimated: only the distortions of |e|^2 and |b|^2 enter,
so the *relative* error does not grow as 1 - cos shrinks. (A sketched inner product divided by exact norms would
have an absolute error ~ sqrt(2/d) on cos itself: useless for 1 - cos ~ 1e-3.) Each distortion |Xp|^2/|X|^2 of an
(N, C) matrix X under a shared P is a Gaussian quadratic form with relative standard deviation sqrt(2 / (d rho)),
where rho = tr(G)^2 / |G|_F^2 >= 1 is the effective rank of the channel Gram matrix G = X^T X: tokens spread over
many channel directions average out, one dominant direction (rho ~ 1) does not. So, to first order,
    relative error of E_c  ~  sqrt(2/d) * sqrt(1/rho_e + 1/rho_b)     (std)
plus a bias of order 1/(d rho) of either sign (dividing by |Sb|^2 raises the mean, the cos^2(Se, Sb) term, about
1/(d rho) for a near-orthogonal pair, lowers it). E_p is the
same with e restricted to the tokens that are not recomputed. Measured (d = 64, 40 projections,
``tests/unit/test_sketch.py``): relative std 0.03 for isotropic outputs (predicted 0.035), 0.12 with a few massive
channels (0.12), 0.25-0.27 when every token points one way (rho = 1, the worst case; 0.25), each the same for
1 - cos from 5e-5 to 4e-2. On the trained reference model (``tests/integration/test_sketch_profile.py``, 20 steps):
median 4.7 %, largest 25 % over all E_c entries, 6 % on the per-step sums the DP adds, the same full steps at 2x
and 3x, PSNR within 0.01 dB. Averaging over batch rows, CFG streams and steps does not shrink the error much when
their Gram matrices are alike (one P serves them all), and the error is systematic per module (the same P at every
step), which keeps the DP's ranking of steps. Below 1 - cos ~ 1e-6 the float32 per-token products limit either mode.
"""

from __future__ import annotations

import math

import torch


Tensor = torch.Tensor
SKETCH_DTYPE = torch.float32  # sketches are accumulated and stored in float32 on the output's device


def projection(width: int, dim: int, seed: int = 0) -> Tensor:
    """The projection P (width, dim) of every output of that width: N(0, 1/dim) entries from a CPU generator seeded
    with (seed, width), so it is the same on every device and in every run."""
    generator = torch.Generator().manual_seed((seed << 20) + width)
    return torch.randn(width, dim, generator=generator, dtype=SKETCH_DTYPE) / math.sqrt(dim)  # (C, d)


def sketch_width(channels: int, dim: int) -> int:
    """Width of what is stored for an output of ``channels`` channels: the output itself when ``dim`` is 0 (exact
    mode) or not smaller than it, else ``dim``."""
    return channels if dim == 0 or channels <= dim else dim


class Sketcher:
    """Applies the seeded projection of each width; one copy of each matrix per device, made on first use."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.dim, self.seed = dim, seed
        self._matrices: dict[tuple[int, torch.device], Tensor] = {}

    def __call__(self, output: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, W) float32 on the output's device, W = ``sketch_width(C, dim)``."""
        channels = output.shape[-1]
        if sketch_width(channels, self.dim) == channels:
            return output.to(SKETCH_DTYPE, copy=True)  # (B, N, C): small widths are kept exactly
        return torch.matmul(output.to(SKETCH_DTYPE), self.matrix(channels, output.device))  # (B, N, d)

    def matrix(self, width: int, device: torch.device) -> Tensor:
        key = (width, device)
        if key not in self._matrices:
            self._matrices[key] = projection(width, self.dim, self.seed).to(device)
        return self._matrices[key]

    def held(self) -> list[Tensor]:
        """The projection matrices this sketcher keeps (for the memory accounting)."""
        return list(self._matrices.values())
