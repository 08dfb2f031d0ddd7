"""Fidelity metrics between a reference image batch and a candidate (pure torch).

Images use ComfyUI's IMAGE layout: float tensors ``[B, H, W, C]`` with values in ``[0, 1]``. Every metric is
computed in float64 on the CPU, over the whole batch, and returned as a Python ``float``; the reference comes first.
Shapes must match exactly, otherwise a :class:`ValueError` names both shapes.

PSNR and SSIM are small enough to keep here (torch only, no new runtime dependency); tests/unit/test_metrics.py checks
both against scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity`` (Wang et al. settings) on the
same images, to 1e-9.
"""

import math

import torch
import torch.nn.functional as F


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(ref: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that the shapes match and return both tensors as float64 on the CPU."""
    if ref.shape != img.shape:
        raise ValueError(
            f"Cannot compare images of different shapes: reference {tuple(ref.shape)} vs candidate "
            f"{tuple(img.shape)}. Both must have the same batch size, height, width and channels."
        )
    return ref.detach().to("cpu", torch.float64), img.detach().to("cpu", torch.float64)


def psnr(ref: torch.Tensor, img: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for data range 1: ``10 * log10(1 / MSE)``, ``MSE = mean((ref - img)^2)``.

    Returns ``math.inf`` when the images are identical (MSE = 0).
    """
    ref64, img64 = _pair(ref, img)
    mse = float(torch.mean((ref64 - img64) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)


def max_abs_error(ref: torch.Tensor, img: torch.Tensor) -> float:
    """Largest absolute difference over all elements: ``max |ref - img|`` (0 for empty tensors)."""
    ref64, img64 = _pair(ref, img)
    if ref64.numel() == 0:
        return 0.0
    return float(torch.max(torch.abs(ref64 - img64)))


def relative_l2(ref: torch.Tensor, img: torch.Tensor) -> float:
    """Relative L2 error ``||img - ref||_2 / ||ref||_2`` over all elements.

    When the reference is all zeros the ratio is undefined: 0 if the candidate is also all zeros, else ``math.inf``.
    """
    ref64, img64 = _pair(ref, img)
    error = float(torch.linalg.vector_norm(img64 - ref64))
    norm = float(torch.linalg.vector_norm(ref64))
    if norm == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return error / norm


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian ``g g^T`` with ``g[i] ~ exp(-(i - (size - 1) / 2)^2 / (2 sigma^2))``, float64."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(ref: torch.Tensor, img: torch.Tensor) -> float:
    """Mean structural similarity (Wang et al. 2004) for data range ``L = 1``.

    With local statistics from an 11x11 Gaussian window (sigma 1.5, valid convolution, no padding)::

        SSIM = ((2 mu_r mu_i + C1) (2 sigma_ri + C2)) / ((mu_r^2 + mu_i^2 + C1) (sigma_r^2 + sigma_i^2 + C2))
        C1 = (K1 L)^2, C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03

    The SSIM map is computed for each channel of each image and averaged over all positions, channels and images.
    Accepts ``[B, H, W, C]`` or a single ``[H, W, C]`` image; height and width must be at least 11.
    """
    ref64, img64 = _pair(ref, img)
    if ref64.dim() == 3:
        ref64, img64 = ref64.unsqueeze(0), img64.unsqueeze(0)
    if ref64.dim() != 4:
        raise ValueError(f"SSIM expects images [B, H, W, C] (or [H, W, C]); got shape {tuple(ref.shape)}.")
    height, width = ref64.shape[1], ref64.shape[2]
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (its Gaussian window); "
            f"got {height}x{width} (shape {tuple(ref.shape)})."
        )
    # [B, H, W, C] -> [B*C, 1, H, W]: every channel of every image is filtered on its own.
    x = ref64.permute(0, 3, 1, 2).reshape(-1, 1, height, width)
    y = img64.permute(0, 3, 1, 2).reshape(-1, 1, height, width)
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).view(1, 1, SSIM_WINDOW, SSIM_WINDOW)

    mu_x = F.conv2d(x, window)
    mu_y = F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov_xy = F.conv2d(x * y, window) - mu_x * mu_y

    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(torch.mean(numerator / denominator))


def frechet_distance(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians N(mean_a, cov_a) and N(mean_b, cov_b), as FID computes it::

        d² = |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a^½ S_b S_a^½)^½)

    (``tr((S_a S_b)^½)`` equals ``tr((S_a^½ S_b S_a^½)^½)``, which is symmetric and so has a stable ``eigh``).
    Means (D,), covariances (D, D); computed in float64; negative eigenvalues from round-off count as 0.
    """
    mean_a, mean_b, cov_a, cov_b = (t.detach().to("cpu", torch.float64) for t in (mean_a, mean_b, cov_a, cov_b))
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (*mean_a.shape, *mean_a.shape):
        raise ValueError(
            f"Fréchet distance needs means (D,) and covariances (D, D) of one D; got {tuple(mean_a.shape)}, "
            f"{tuple(cov_a.shape)}, {tuple(mean_b.shape)}, {tuple(cov_b.shape)}."
        )

    def sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
        values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
        root: torch.Tensor = (vectors * values.clamp(min=0.0).sqrt()) @ vectors.T
        return root

    root_a = sqrt_psd(cov_a)
    product = root_a @ cov_b @ root_a  # (D, D), symmetric
    cross = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0.0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * cross)
