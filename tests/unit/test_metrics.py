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
