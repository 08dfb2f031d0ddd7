"""The reference model's task: handwritten digits, their latents, and the classifier that judges generated samples.

Data: scikit-learn's bundled digits (1797 images of 8x8 pixels, ink 0..16, 10 classes), drawn as dark ink on white
paper (``gray = 1 - ink / 16``) and upsampled bilinearly to 16x16, one pixel per latent pixel. A ``Canvas`` says
where a model sees them (``CANVASES``):

* ``digits16``: the digit is the whole 16x16 image, shifted by up to a pixel (the first reference model: 64 tokens);
* ``digits32``: the 16x16 digit, shifted by up to a pixel, in one of the four quadrants of a 32x32 sheet of paper
  (256 tokens). Three quarters of the tokens are then static paper and a few carry the stroke, which is what token
  recompute (UAS) is for. The quadrant is the whole placement: a digit's tokens then see the same sheet edges as on
  the first model's canvas, and a first attempt at any even offset (81 placements, overlapping) reached only 30 % of
  samples recognised within the 2-core CPU budget (this one: 71 %).

Latent codec: the latent that ComfyUI's latent-to-RGB preview (``latent_preview_rgb``, the SODA Latent Preview
Decode node) turns back into the image. With the Flux latent format's factors ``F`` (16x3) and bias ``b``,

    rgb = x F + b,    x = process_in(latent)      (model space)

so the model-space latent of a gray pixel ``g`` is the least-norm solution ``x = F^+ ((2g - 1)·1 - b)``, and
``latent = process_out(x)``. Decoding needs no VAE, and the preview decode is exact for these latents.

Classifier: a small CNN on 16x16 gray images; its 64 penultimate features give an FID-style Fréchet distance. The
weights and the statistics of the real digits' features are stored in ``CLASSIFIER_FILE``, written by
``scripts/train_reference_model.py``, so judging samples needs neither scikit-learn nor the data set. On the 32x32
canvas a CNN whose receptive field (17 pixels) covers a digit, with global max pooling over positions
(``PooledDigitClassifier``): it judges a digit wherever it stands without a locate-and-crop step that a stray
stroke could mislead, and its pooled 64 features keep the FID-style distance (real digits in a random quadrant).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


ASSETS = Path(__file__).resolve().parent / "assets"
CLASSIFIER_FILE = ASSETS / "digits_classifier.safetensors"
SIZE = 16  # a digit's side (and the first model's image and latent side)
CLASSES = 10
CAPTION = "digit {}"  # the caption of class c (the stand-in text encoder embeds its words)
FEATURES = 64


def captions() -> list[str]:
    return [CAPTION.format(c) for c in range(CLASSES)]


def load_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as gray images (N, 16, 16) in [0, 1] (1 = paper) and labels (N,) int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise RuntimeError(
            "The digits data set comes with scikit-learn, which is not installed. Fix: run `make setup` (it "
            "installs the development requirements) or `pip install scikit-learn`."
        ) from error
    data = load_digits()
    ink = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    gray = 1.0 - F.interpolate(ink, size=(SIZE, SIZE), mode="bilinear", align_corners=False)  # (N, 1, 16, 16)
    return gray[:, 0].clamp(0.0, 1.0), torch.tensor(data.target, dtype=torch.long)


def shift(images: torch.Tensor, generator: torch.Generator, pixels: int = 1) -> torch.Tensor:
    """Random translation of each image by up to ``pixels`` in x and y, paper-coloured border. (N, H, W)."""
    n, h, w = images.shape
    padded = F.pad(images[:, None], (pixels,) * 4, value=1.0)[:, 0]  # (N, H+2p, W+2p)
    dy, dx = (torch.randint(0, 2 * pixels + 1, (n,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n)[:, None, None], rows, cols]


def place(images: torch.Tensor, size: int, generator: torch.Generator, stride: int) -> torch.Tensor:
    """Each (16x16) image on a ``size`` x ``size`` sheet of paper at a random offset, a multiple of ``stride`` in x
    and y (stride 16 on a 32x32 sheet: one of the four quadrants). (N, h, w) -> (N, S, S)."""
    n, h, w = images.shape
    dy, dx = (stride * torch.randint(0, (size - e) // stride + 1, (n,), generator=generator) for e in (h, w))
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, w)
    canvas = torch.ones(n, size, size, dtype=images.dtype)
    canvas[torch.arange(n)[:, None, None], rows, cols] = images
    return canvas


@dataclass(frozen=True)
class Canvas:
    """Where a model's digits are drawn: a ``size`` x ``size`` image (and latent), its classifier's file."""

    name: str
    size: int
    classifier_file: Path
    stride: int = 16  # placed digits sit at offsets that are multiples of this (16: a quadrant of a 32x32 sheet)
    placement_seed: int = 12_345  # the fixed placement of the real digits (held-out test, feature statistics)

    @property
    def placed(self) -> bool:
        return self.size > SIZE

    def augment(self, gray: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training images from digits (N, 16, 16): shifted by up to a pixel, then placed at random."""
        shifted = shift(gray, generator)
        return place(shifted, self.size, generator, self.stride) if self.placed else shifted

    def real(self, gray: torch.Tensor) -> torch.Tensor:
        """The real digits as this canvas shows them (a fixed placement): what samples are compared with."""
        if not self.placed:
            return gray
        return place(gray, self.size, torch.Generator().manual_seed(self.placement_seed), self.stride)

    def classifier(self) -> torch.nn.Module:
        return PooledDigitClassifier() if self.placed else DigitClassifier()


CANVASES = {
    "digits16": Canvas("digits16", SIZE, CLASSIFIER_FILE),
    "digits32": Canvas("digits32", 32, ASSETS / "digits32_classifier.safetensors"),
}


# ------------------------------------------------------------------------------------------------- latent codec


def _factors(latent_format: Any) -> tuple[torch.Tensor, torch.Tensor]:
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float64)  # (16, 3)
    bias = torch.tensor(latent_format.latent_rgb_factors_bias, dtype=torch.float64)  # (3,)
    return factors, bias


def encode(latent_format: Any, gray: torch.Tensor) -> torch.Tensor:
    """Gray images (N, H, W) in [0, 1] -> model-space latents (N, 16, H, W) that the preview decodes to ``gray``."""
    factors, bias = _factors(latent_format)
    pinv = torch.linalg.pinv(factors.T)  # (16, 3)
    rgb = (2.0 * gray.double() - 1.0)[..., None].expand(*gray.shape, 3)  # (N, H, W, 3)
    x = (rgb - bias) @ pinv.T  # (N, H, W, 16)
    return x.movedim(-1, 1).float()


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (N, H, W, 3) -> gray (N, H, W): the channel mean."""
    return images.float().mean(-1)


# --------------------------------------------------------------------------------------------------- classifier


class DigitClassifier(torch.nn.Module):
    """Gray (N, 16, 16) -> logits (N, 10); ``features`` gives the 64 features (before the head) the Fréchet
    distance uses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.embed = torch.nn.Linear(64 * 4 * 4, FEATURES)
        self.head = torch.nn.Linear(FEATURES, CLASSES)

    def features(self, gray: torch.Tensor) -> torch.Tensor:
        x = (1.0 - gray)[:, None]  # (N, 1, 16, 16), ink = 1
        x = F.relu(self.conv1(x))  # (N, 32, 16, 16)
        x = F.relu(self.conv2(x))  # (N, 64, 8, 8)
        x = F.relu(self.conv3(x))  # (N, 64, 4, 4)
        return F.relu(self.embed(x.flatten(1)))  # (N, 64)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(gray))  # type: ignore[no-any-return]


class PooledDigitClassifier(torch.nn.Module):
    """Gray (N, S, S), any S >= 16 -> logits (N, 10): convolutions (receptive field 17 pixels) and a global max
    over positions, so a digit is judged wherever it stands; ``features`` gives the 64 pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.conv4 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.embed = torch.nn.Linear(64, FEATURES)
        self.head = torch.nn.Linear(FEATURES, CLASSES)

    def features(self, gray: torch.Tensor) -> torch.Tensor:
        x = (1.0 - gray)[:, None]  # (N, 1, S, S), ink = 1
        x = F.relu(self.conv1(x))  # (N, 32, S, S)
        x = F.relu(self.conv2(x))  # (N, 64, S/2, S/2)
        x = F.relu(self.conv3(x))  # (N, 64, S/4, S/4)
        x = F.relu(self.conv4(x)).amax(dim=(2, 3))  # (N, 64): the strongest response anywhere
        return F.relu(self.embed(x))  # (N, 64)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(gray))  # type: ignore[no-any-return]


def save_classifier(model: torch.nn.Module, real_features: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors["real.mean"] = real_features.double().mean(0)
    tensors["real.cov"] = torch.cov(real_features.double().T)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


class _Stored:
    """One stored classifier and the real digits' feature statistics."""

    def __init__(self, path: Path) -> None:
        from safetensors.torch import load_file

        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing. Fix: run scripts/train_reference_model.py to make it.")
        tensors = load_file(str(path))
        self.real_mean, self.real_cov = tensors.pop("real.mean"), tensors.pop("real.cov")
        self.model = PooledDigitClassifier() if "conv4.weight" in tensors else DigitClassifier()
        self.model.load_state_dict(tensors)
        self.model.eval()


class Judge:
    """Accuracy and FID-style distance of samples: with the classifier at ``path``, or (``None``) with the one of
    the canvas the images' side names (16: ``CLASSIFIER_FILE``, 32: the digits32 canvas's), loaded once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._stored: dict[Path, _Stored] = {}
        if path is not None:
            self._classifier(path)

    def _classifier(self, path: Path) -> _Stored:
        if path not in self._stored:
            self._stored[path] = _Stored(path)
        return self._stored[path]

    def classifier_for(self, size: int) -> _Stored:
        if self.path is not None:
            return self._classifier(self.path)
        canvas = next((c for c in CANVASES.values() if c.size == size), None)
        if canvas is None:
            sizes = ", ".join(str(c.size) for c in CANVASES.values())
            raise ValueError(f"no digits classifier judges {size}x{size} images (canvases: {sizes}).")
        return self._classifier(canvas.classifier_file)

    @torch.no_grad()
    def evaluate(self, gray: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """accuracy (share of samples classified as their condition) and ``fid``: Fréchet distance of the
        samples' features to the real digits'."""
        from comfyui_soda.soda_core.metrics import frechet_distance

        stored = self.classifier_for(gray.shape[-1])
        features = stored.model.features(gray.float())  # (N, 64)
        predicted = stored.model.head(features).argmax(-1)
        mean, cov = features.double().mean(0), torch.cov(features.double().T)
        return {
            "accuracy": float((predicted == labels).float().mean()),
            "fid": frechet_distance(mean, cov, stored.real_mean, stored.real_cov),
        }


def draw_grid(gray: torch.Tensor, labels: torch.Tensor, path: Path, title: str) -> None:
    """A PNG of samples: rows = digits 0-9, columns = the first (up to) 10 samples of each. gray (N, S, S)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(10, len(labels) // CLASSES)
    side, scale = gray.shape[-1], gray.shape[-1] / SIZE
    rows = [gray[labels == c][:columns] for c in range(CLASSES)]  # 10 x (columns, S, S)
    grid = torch.cat([torch.cat(list(row), dim=1) for row in rows], dim=0)  # (10 S, S * columns)
    fig, ax = plt.subplots(figsize=(scale * 0.5 * columns + 1.2, scale * 5.0 + 0.6))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([side * c + side / 2 - 0.5 for c in range(CLASSES)], captions(), fontsize=8)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
