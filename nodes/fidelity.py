"""Fidelity node: how close is an accelerated image to the full-compute reference?

The numbers come from :mod:`soda_core.metrics`. The node is an output node, so it runs even when nothing consumes its
outputs, and its ``ui`` dict (``soda_metrics`` and ``text``) is recorded under the node in ``/history`` outputs.

Infinite PSNR (identical images): the FLOAT output is ``math.inf`` (exact, and comparisons such as ``psnr > 40``
still work), but JSON has no Infinity, so in the ``ui`` dict every non-finite value is written as ``null`` and a
``note`` says why; ``identical`` is true when the images are bit-equal.
"""

import math
from typing import Any

import torch
from comfy_api.latest import io

from ..soda_core.metrics import max_abs_error, psnr, relative_l2, ssim
from .inputs import SodaNode, checked
from .text_lines import report_text


def compare_images(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """psnr, ssim, max_abs and rel_l2 of ``candidate`` against ``reference`` (IMAGE batches of the same shape)."""
    for name, image in (("reference", reference), ("candidate", candidate)):
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
            raise ValueError(
                f"Compare Images (SODA fidelity): {name} is {type(image).__name__}"
                f"{tuple(image.shape) if isinstance(image, torch.Tensor) else ''}, expected an IMAGE batch "
                "[batch, height, width, channels]. Fix: connect an IMAGE output (e.g. a VAE Decode)."
            )
        if not bool(image.isfinite().all()):
            raise ValueError(
                f"Compare Images (SODA fidelity): {name} holds NaN or infinite pixels, so no metric means anything. "
                "Fix: find the node that produced them (a sampler or decode that diverged) and compare finite images."
            )
    if reference.shape != candidate.shape:
        raise ValueError(
            f"Compare Images (SODA fidelity): reference is {tuple(reference.shape)} but candidate is "
            f"{tuple(candidate.shape)} ([batch, height, width, channels]). Compare images of the same size and batch: "
            "render both with the same latent size and batch size, or scale the candidate to the reference's size."
        )
    return {
        "psnr": psnr(reference, candidate),
        "ssim": ssim(reference, candidate),
        "max_abs": max_abs_error(reference, candidate),
        "rel_l2": relative_l2(reference, candidate),
    }


def json_safe_metrics(metrics: dict[str, float]) -> dict[str, Any]:
    """The metrics with non-finite values replaced by ``None`` (JSON null), plus ``identical`` and, if needed, ``note``."""
    safe: dict[str, Any] = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    safe["identical"] = metrics["max_abs"] == 0.0
    nulled = [k for k, v in metrics.items() if not math.isfinite(v)]
    if nulled:
        reason = "identical images have infinite PSNR" if safe["identical"] else "not finite"
        safe["note"] = f"{', '.join(nulled)} set to null: {reason} (JSON cannot hold Infinity/NaN)."
    return safe


def format_report(metrics: dict[str, float], shape: tuple[int, ...]) -> str:
    """Short lines in the words of image tools: PSNR, SSIM, the largest pixel difference and what was compared."""
    value = metrics["psnr"]
    psnr_text = "inf (the images are identical)" if value == math.inf else f"{value:.2f} dB (higher is closer)"
    batch, height, width = ((1, *shape) if len(shape) == 3 else shape)[:3]  # IMAGE is (B, H, W, C)
    images = f"{batch} image{'' if batch == 1 else 's'}"
    return report_text(
        [
            f"PSNR: {psnr_text}",
            f"SSIM: {metrics['ssim']:.4f} (1 = identical)",
            f"largest pixel difference: {metrics['max_abs']:.3g} (pixel values 0 to 1)",
            f"compared: {images} of {width} x {height} pixels",
        ]
    )


class SODACompareImages(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODACompareImages",
            display_name="Compare Images (SODA fidelity)",
            category="sampling/soda",
            description="Measure how far an accelerated image is from the full-compute reference: PSNR (dB), SSIM, "
            "max abs error and relative L2, over the whole batch. Identical images give PSNR inf (null in the UI).",
            is_output_node=True,
            inputs=[
                io.Image.Input("reference", tooltip="The reference images (e.g. sampled without SODA)."),
                io.Image.Input("candidate", tooltip="The images to judge, same size and batch as the reference."),
            ],
            outputs=[
                io.Float.Output("psnr", display_name="psnr", tooltip="PSNR in dB (data range 1); inf if identical."),
                io.Float.Output("ssim", display_name="ssim", tooltip="Mean SSIM (11x11 Gaussian window), 1 = equal."),
                io.String.Output(
                    "report",
                    display_name="report",
                    tooltip="PSNR, SSIM and the largest pixel difference as short lines (connect Preview as Text).",
                ),
            ],
        )

    @classmethod
    @checked
    def execute(cls, reference: torch.Tensor, candidate: torch.Tensor) -> io.NodeOutput:
        metrics = compare_images(reference, candidate)
        report = format_report(metrics, tuple(reference.shape))
        ui = {"soda_metrics": [json_safe_metrics(metrics)], "text": [report]}
        return io.NodeOutput(metrics["psnr"], metrics["ssim"], report, ui=ui)


NODES: list[type[io.ComfyNode]] = [SODACompareImages]
