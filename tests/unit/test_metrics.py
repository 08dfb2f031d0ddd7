"""soda_core.metrics: PSNR, SSIM, max abs error and relative L2 on IMAGE batches [B, H, W, C]."""

import math

import pytest
import torch

from comfyui_soda.soda_core.metrics import max_abs_error, psnr, relative_l2, ssim


def _image(seed: int, shape: tuple[int, ...] = (2, 32, 24, 3)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator)


def _noisy(image: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (image + sigma * torch.randn(image.shape, generator=generator)).clamp(0, 1)


def test_identical_images_are_perfect() -> None:
    image = _image(0)
    assert psnr(image, image.clone()) == math.inf
    assert ssim(image, image.clone()) == pytest.approx(1.0, abs=1e-12)
    assert max_abs_error(image, image.clone()) == 0.0
    assert relative_l2(image, image.clone()) == 0.0


def test_psnr_of_known_error_is_exact() -> None:
    # Every element off by exactly 0.01 -> MSE 1e-4 -> PSNR = 10 log10(1 / 1e-4) = 40 dB.
    reference = torch.full((1, 16, 16, 3), 0.5, dtype=torch.float64)
    signs = torch.where(torch.arange(reference.numel()) % 2 == 0, 1.0, -1.0).to(torch.float64)
    candidate = reference + 0.01 * signs.view(reference.shape)
    assert psnr(reference, candidate) == pytest.approx(40.0, abs=1e-9)
    assert max_abs_error(reference, candidate) == pytest.approx(0.01, abs=1e-12)
    assert relative_l2(reference, candidate) == pytest.approx(0.01 / 0.5, rel=1e-9)


def test_psnr_of_gaussian_noise_matches_its_variance() -> None:
    # Unclamped noise of sigma 0.05 around mid-grey: MSE ~ 0.0025 -> PSNR ~ 26.02 dB.
    reference = torch.full((1, 64, 64, 3), 0.5)
    generator = torch.Generator().manual_seed(1)
    candidate = reference + 0.05 * torch.randn(reference.shape, generator=generator)
    assert psnr(reference, candidate) == pytest.approx(10 * math.log10(1 / 0.05**2), abs=0.15)


def test_ssim_of_constant_images_has_closed_form() -> None:
    # No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.01^2.
    a, b = 0.5, 0.6
    reference = torch.full((1, 16, 16, 3), a, dtype=torch.float64)
    candidate = torch.full((1, 16, 16, 3), b, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(reference, candidate) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-12)


def test_ssim_is_symmetric_and_below_one_for_noise() -> None:
    reference = _image(2)
    candidate = _noisy(reference, 0.1, seed=3)
    forward = ssim(reference, candidate)
    assert forward == pytest.approx(ssim(candidate, reference), abs=1e-12)
    assert 0.0 < forward < 1.0
    assert ssim(reference, _noisy(reference, 0.3, seed=3)) < forward  # more noise, less similar


def test_ssim_accepts_a_single_image_and_rejects_tiny_ones() -> None:
    image = _image(4, (16, 16, 3))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(_image(5, (1, 8, 8, 3)), _image(6, (1, 8, 8, 3)))


@pytest.mark.parametrize("metric", [psnr, ssim, max_abs_error, relative_l2])
def test_shape_mismatch_names_both_shapes(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"\(1, 16, 16, 3\).*\(1, 16, 12, 3\)"):
        metric(_image(0, (1, 16, 16, 3)), _image(1, (1, 16, 12, 3)))


def test_relative_l2_of_zero_reference() -> None:
    zeros = torch.zeros(1, 4, 4, 3)
    assert relative_l2(zeros, zeros) == 0.0
    assert relative_l2(zeros, zeros + 0.1) == math.inf


def test_frechet_distance_of_known_gaussians() -> None:
    from comfyui_soda.soda_core.metrics import frechet_distance

    eye = torch.eye(3, dtype=torch.float64)
    assert frechet_distance(torch.zeros(3), eye, torch.zeros(3), eye) == pytest.approx(0.0, abs=1e-12)
    # means 2 apart along one axis, covariances I and 4I: 4 + tr(I + 4I - 2 * 2I) = 4 + 3
    shifted = torch.tensor([2.0, 0.0, 0.0])
    assert frechet_distance(torch.zeros(3), eye, shifted, 4 * eye) == pytest.approx(7.0, rel=1e-12)
    # symmetric, and equal to the scipy-style formula tr(A + B - 2 sqrt(A B)) on random covariances
    g = torch.Generator().manual_seed(0)
    a, b = (m @ m.T for m in (torch.randn(4, 4, generator=g, dtype=torch.float64) for _ in range(2)))
    mu = torch.randn(4, generator=g, dtype=torch.float64)
    forward, backward = frechet_distance(mu, a, -mu, b), frechet_distance(-mu, b, mu, a)
    assert forward == pytest.approx(backward, rel=1e-9)
    values = torch.linalg.eigvals(a @ b).real.clamp(min=0).sqrt().sum()
    expected = float((2 * mu).square().sum() + a.trace() + b.trace() - 2 * values)
    assert forward == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_refuses_mismatched_shapes() -> None:
    from comfyui_soda.soda_core.metrics import frechet_distance

    with pytest.raises(ValueError, match=r"means \(D,\) and covariances \(D, D\)"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(2))


# --- against scikit-image (a development requirement, scripts/setup_env.sh) -------------------------------------------
# skimage.metrics with the settings of Wang et al. 2004, which soda_core.metrics implements: Gaussian weights
# (sigma 1.5, truncated at 3.5 sigma, i.e. an 11x11 window), population covariances, data range 1; its SSIM map is
# cropped by the window radius, which equals our valid convolution. Both run in float64, so they agree to round-off.
SKIMAGE_TOLERANCE = 1e-9  # absolute, in dB for PSNR and in SSIM units (measured: at most 3e-14)


def _skimage_pairs() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Reference/candidate batches [B, H, W, C] of different kinds: noise, smooth images, shifts, odd sizes, grey."""
    generator = torch.Generator().manual_seed(7)
    noise = _image(10, (3, 40, 33, 3))
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    smooth = torch.stack([torch.sin(6 * xs) * 0.4 + 0.5, ys, (xs + ys) / 2], dim=-1).unsqueeze(0)  # (1, 48, 64, 3)
    grey = _image(11, (2, 16, 16, 1))
    return [
        ("uniform noise, light noise", noise, _noisy(noise, 0.02, seed=12)),
        ("uniform noise, heavy noise", noise, _noisy(noise, 0.3, seed=13)),
        ("smooth image, shifted by 2 px", smooth, torch.roll(smooth, shifts=2, dims=2)),
        ("smooth image, brighter", smooth, (smooth * 1.1 + 0.02).clamp(0, 1)),
        ("smooth image, noisy", smooth, _noisy(smooth, 0.05, seed=14)),
        ("one channel, minimum size 11", grey[:, :11, :13], torch.rand((2, 11, 13, 1), generator=generator)),
        ("one channel, 16x16", grey, _noisy(grey, 0.1, seed=15)),
    ]


@pytest.mark.parametrize(
    ("reference", "candidate"), [pytest.param(ref, img, id=case) for case, ref, img in _skimage_pairs()]
)
def test_psnr_and_ssim_match_scikit_image(reference: torch.Tensor, candidate: torch.Tensor) -> None:
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ref = reference.to(torch.float64).numpy()
    img = candidate.to(torch.float64).numpy()
    expected_psnr = peak_signal_noise_ratio(ref, img, data_range=1.0)
    expected_ssim = np.mean(
        [
            structural_similarity(
                r, c, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for r, c in zip(ref, img)
        ]
    )
    assert psnr(reference, candidate) == pytest.approx(expected_psnr, abs=SKIMAGE_TOLERANCE)
    assert ssim(reference, candidate) == pytest.approx(float(expected_ssim), abs=SKIMAGE_TOLERANCE)
