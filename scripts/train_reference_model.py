"""Train a reference model and the classifier that judges it (``digits16``: the embedded default of the demo).

    .venv/bin/python scripts/train_reference_model.py [--model digits16|digits32] [--iterations N] [--quick]
                                                      [--check]

What it makes for ``--model digits16`` (the default), from scikit-learn's bundled digits (``benchmarks/digits.py``:
16x16 gray digits and their latents):

* ``models/soda_reference_digits.safetensors``: a conditional Flux-architecture DiT built from ComfyUI's own classes
  (``comfy.supported_models.Flux``; hidden 128, 2 heads, 2 double + 4 single blocks), trained by rectified flow on
  the latents of the digits; caption ``"digit c"`` through the stand-in text encoder, 10 % of captions dropped to
  ``""`` so classifier-free guidance works too. The weights saved are an exponential moving average, in float16,
  with the architecture and the captions in the metadata;
* ``benchmarks/assets/digits_classifier.safetensors``: a small CNN trained on 80 % of the digits (held-out accuracy
  reported), with the mean and covariance of the real digits' features for the FID-style distance;
* ``benchmarks/results/reference_training.json`` (figures) and ``docs/images/reference_samples.png`` (a grid of
  samples): the saved model is loaded back with the pack's loader and samples ``--eval-samples`` digits through
  ``comfy.sample.sample`` at full compute (20 steps euler/simple, cfg 1.0 and 1.5), which the classifier judges.

``--model digits32`` makes the same kinds of files (names in ``scripts/reference_variants.py``) for the digits,
each in a random quadrant of a 32x32 latent of paper (256 image tokens, three quarters of them static paper), and
its classifier for 32x32 images (global max pooling over positions).

Training goes through ComfyUI's own Flux forward; the tensors autograd saves are copied as they are saved, so the
blocks' in-place adds do not break the backward pass (``autograd_safe``). Fixed seed and
thread count: two runs on one machine give byte-identical files (``--check`` retrains and compares with the files
on disk). ``--quick`` is a few iterations into a scratch folder, what the test suite runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shlex
import struct
import sys
import time
from pathlib import Path
from typing import Any

from reference_variants import VARIANTS, Variant

from comfy_env import ROOT, import_comfy, register_pack


sys.path.insert(0, str(ROOT))

logger = logging.getLogger("train_reference_model")

MAX_BYTES = 25 * 1000 * 1000
ZERO_INIT = ("img_mod.lin", "txt_mod.lin", "modulation.lin", "final_layer")  # adaLN-Zero: every block starts as x
EVAL = {"steps": 20, "sampler": "euler", "scheduler": "simple", "seed": 1000}
EVAL_CFGS = (1.0, 1.5)  # the grid shows the first
EMA_DECAY = 0.999


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(VARIANTS), default="digits16", help="which reference model")
    parser.add_argument("--iterations", type=int, default=None, help="generator training steps (default: model's)")
    parser.add_argument("--batch", type=int, default=None, help="generator batch size (default: the model's)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine; default: model's)")
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default=None,
        help="matmul precision of the generator's training passes (bfloat16: CPU autocast, weights and optimizer "
        "stay float32; fast on CPUs with AMX or AVX-512 BF16, slow elsewhere; default: the model's)",
    )
    parser.add_argument("--classifier-epochs", type=int, default=60)
    parser.add_argument("--eval-samples", type=int, default=200, help="samples judged at the end (multiple of 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed, for reproducible bits)")
    parser.add_argument("--out", type=Path, default=None, help="write every file under this folder instead")
    parser.add_argument("--quick", action="store_true", help="5 iterations, 20 samples, into --out (tests)")
    parser.add_argument("--check", action="store_true", help="retrain and compare with the files on disk")
    args = parser.parse_args(argv)
    variant = VARIANTS[args.model]
    args.iterations = variant.iterations if args.iterations is None else args.iterations
    args.batch = variant.batch if args.batch is None else args.batch
    args.lr = variant.lr if args.lr is None else args.lr
    args.precision = variant.precision if args.precision is None else args.precision
    if args.quick:
        args.iterations, args.classifier_epochs, args.eval_samples = 5, 1, 20
    if args.iterations < 1 or args.batch < 1 or args.eval_samples < 10 or args.eval_samples % 10:
        parser.error("--iterations and --batch must be >= 1, --eval-samples a positive multiple of 10")
    if args.quick and args.out is None:
        parser.error("--quick writes a throw-away model: give it an --out folder")
    return args


# ---------------------------------------------------------------------------------------------------- training


def autograd_safe() -> Any:
    """Autograd through ComfyUI's own forward, whose blocks add in place (``img += ...``): every tensor autograd
    saves for the backward pass is copied when it is saved, so a later in-place add cannot change it."""
    import torch

    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


def check_denoising(model: Any, x: Any, sigma: Any, context: Any, pooled: Any) -> None:
    """ComfyUI's Flux denoises as ``x - sigma * v``: the target the training loss uses."""
    import torch

    with torch.no_grad():
        own = model.diffusion_model(x, sigma, context, y=pooled)
        denoised = model.apply_model(x, sigma, c_crossattn=context, y=pooled)
    if not torch.allclose(denoised, x - sigma[:, None, None, None] * own, atol=1e-5):
        raise RuntimeError("ComfyUI's Flux no longer denoises as x - sigma * v; the training target would be wrong")


def build_model(config: dict[str, Any], seed: int) -> Any:
    """The Flux model (``comfy.model_base.Flux``) with seeded weights and adaLN-Zero modulation / final layer."""
    import torch

    from comfyui_soda.nodes.reference_model import build_flux_patcher

    model = build_flux_patcher(config, seed).model
    with torch.no_grad():
        for name, parameter in model.diffusion_model.named_parameters():
            if any(part in name for part in ZERO_INIT) and not name.endswith("norm.weight"):
                parameter.zero_()
    return model


def load_init(model: Any, variant: Variant) -> None:
    """Start from ``variant.init``'s shipped weights (float16 on disk, trained as float32), read by the pack's loader
    so the keys are this ComfyUI's (0.33 names the QK norms' weights ``scale``)."""
    from comfyui_soda.nodes.reference_model import load_reference_model

    path = VARIANTS[variant.init].model_file if variant.init else None
    if path is None:
        return
    if not path.is_file():
        raise SystemExit(f"error: {variant.name} starts from {path}, which is missing (train --model {variant.init})")
    model.diffusion_model.load_state_dict(load_reference_model(path).model.diffusion_model.state_dict())
    logger.info("generator: starting from %s", path.relative_to(ROOT))


def train_classifier(args: argparse.Namespace, canvas: Any, gray: Any, labels: Any) -> tuple[Any, dict[str, Any]]:
    """The digits classifier on a fixed 80 % of the data (the canvas's shifts or placements, light noise), judged
    on the other 20 % (as the canvas shows real digits)."""
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(labels), generator=generator)
    split = int(0.8 * len(labels))
    train, test = order[:split], order[split:]
    torch.manual_seed(args.seed)  # PyTorch's default initialisation draws from the global generator
    model = canvas.classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.classifier_epochs * math.ceil(split / 128))
    for _epoch in range(args.classifier_epochs):
        for batch in torch.randperm(split, generator=generator).split(128):
            images = canvas.augment(gray[train[batch]], generator)
            images = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
            loss = torch.nn.functional.cross_entropy(model(images), labels[train[batch]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(canvas.real(gray[test])).argmax(-1) == labels[test]).float().mean())
    logger.info("classifier: held-out accuracy %.2f %% on %d real digits", 100 * accuracy, len(test))
    return model, {"held_out_accuracy": accuracy, "held_out": len(test), "trained_on": split}


def lr_at(args: argparse.Namespace, step: int) -> float:
    warmup = min(200, args.iterations // 10 + 1)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = (step - warmup) / max(args.iterations - warmup, 1)
    return args.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_generator(args: argparse.Namespace, canvas: Any, model: Any, gray: Any, labels: Any) -> dict[str, Any]:
    """Rectified flow: x_s = (1 - s) x0 + s eps, the model predicts v = eps - x0 at timestep s (ComfyUI's Flux
    convention: ``denoised = x - s * v``); s = ComfyUI's shifted sigma of a logit-normal time (as SD3 trains)."""
    import torch

    from benchmarks.digits import captions, encode
    from comfyui_soda.nodes.reference_model import encode_captions, encode_text

    config = VARIANTS[args.model].unet_config
    widths = config["context_in_dim"], config["vec_in_dim"]
    cond = encode_captions(captions(), *widths)[0]
    context, pooled = cond[0], cond[1]["pooled_output"]  # (10, 2, C), (10, P)
    empty, empty_pooled = encode_text("", *widths)
    empty = empty.expand(1, context.shape[1], -1)  # ComfyUI repeats a shorter uncond to the cond's length
    diffusion_model, sampling = model.diffusion_model, model.model_sampling
    generator = torch.Generator().manual_seed(args.seed + 1)
    probe = encode(model.latent_format, canvas.real(gray[:4])), sampling.sigma(torch.rand(4, generator=generator))
    check_denoising(model, *probe, context[labels[:4]], pooled[labels[:4]])
    ema = {k: v.detach().clone() for k, v in diffusion_model.state_dict().items()}
    optimizer = torch.optim.AdamW(diffusion_model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    losses: list[float] = []
    started = time.perf_counter()
    diffusion_model.train()
    diffusion_model.requires_grad_(True)  # ComfyUI 0.33 builds its parameters frozen (inference only)
    for step in range(args.iterations):
        index = torch.randint(0, len(labels), (args.batch,), generator=generator)
        x0 = encode(model.latent_format, canvas.augment(gray[index], generator))  # (B, 16, S, S) model space
        noise = torch.randn(x0.shape, generator=generator)
        sigma = sampling.sigma(torch.sigmoid(torch.randn(args.batch, generator=generator)))  # (B,) logit-normal
        drop = torch.rand(args.batch, generator=generator) < 0.1  # caption dropout: "" for CFG
        ctx = torch.where(drop[:, None, None], empty, context[labels[index]])  # (B, 2, C)
        vec = torch.where(drop[:, None], empty_pooled, pooled[labels[index]])  # (B, P)
        s = sigma[:, None, None, None]
        with autograd_safe(), torch.autocast("cpu", torch.bfloat16, enabled=args.precision == "bfloat16"):
            v = diffusion_model((1 - s) * x0 + s * noise, sigma, ctx, y=vec).float()  # (B, 16, S, S)
            loss = (v - (noise - x0)).square().mean()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(args, step)
        optimizer.zero_grad(set_to_none=True)
        try:
            loss.backward()
        except RuntimeError as error:
            if "no autograd formula" not in str(error):
                raise
            raise SystemExit(
                f"This ComfyUI cannot train through its own forward: {str(error).splitlines()[0]} (ComfyUI 0.33 "
                "computes rotary embeddings with a kernel that has no backward). Train on ComfyUI 0.3.75; the "
                "trained model loads and samples on both."
            ) from None
        torch.nn.utils.clip_grad_norm_(diffusion_model.parameters(), 1.0)
        optimizer.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, value in diffusion_model.state_dict().items():
                ema[k].lerp_(value, 1.0 - decay)
        losses.append(float(loss.detach()))
        if step % 200 == 0 or step == args.iterations - 1:
            elapsed, recent = time.perf_counter() - started, sum(losses[-200:]) / len(losses[-200:])
            left = elapsed / (step + 1) * (args.iterations - step - 1)
            logger.info(
                "generator: step %d/%d, loss %.4f (%.0f s, ~%.0f s left)",
                step + 1,
                args.iterations,
                recent,
                elapsed,
                left,
            )
    diffusion_model.eval()
    diffusion_model.load_state_dict(ema)
    return {"loss_last_200": sum(losses[-200:]) / len(losses[-200:]), "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------------------------------------ output


def metadata(args: argparse.Namespace, variant: Variant) -> dict[str, str]:
    from benchmarks.digits import captions

    training = {"data": variant.data, "iterations": args.iterations, "batch": args.batch}
    training.update({"lr": args.lr, "seed": args.seed, "caption_dropout": 0.1, "ema": EMA_DECAY})
    training["precision"] = args.precision
    if variant.init:
        training["init"] = str(VARIANTS[variant.init].model_file.relative_to(ROOT))
    return {
        "soda.model_family": "flux",
        "soda.unet_config": json.dumps(variant.unet_config, sort_keys=True),
        "soda.classes": json.dumps(captions()),
        "soda.training": json.dumps(training, sort_keys=True),
        "soda.description": variant.description,
        "soda.format_version": "1",
    }


def serialize(state_dict: dict[str, Any], meta: dict[str, str]) -> bytes:
    """safetensors bytes with a canonical header (``safetensors.torch.save`` writes ``__metadata__`` in hash-map
    order): metadata keys sorted, tensors in data-offset order, compact JSON padded to 8 bytes as safetensors pads."""
    from safetensors.torch import save

    raw: bytes = save(state_dict, metadata=meta)
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    canonical = {"__metadata__": dict(sorted(header.pop("__metadata__").items()))}
    canonical.update(sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]))
    encoded = json.dumps(canonical, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + raw[8 + header_len :]


def evaluate(
    args: argparse.Namespace, size: int, model_path: Path, classifier_path: Path, grid_path: Path
) -> list[dict[str, Any]]:
    """Load the saved model with the pack's loader, sample ``eval_samples`` digits at full compute (one run per cfg
    of ``EVAL_CFGS``, same noise) and judge them."""
    import comfy.sample
    import torch

    from benchmarks.digits import Judge, captions, draw_grid, to_gray
    from comfyui_soda.nodes.reference_model import encode_captions, latent_preview_rgb, load_reference_model

    patcher = load_reference_model(model_path)
    config = patcher.model.model_config.unet_config
    labels = torch.arange(args.eval_samples) % 10
    positive = encode_captions([captions()[c] for c in labels], config["context_in_dim"], config["vec_in_dim"])
    negative = encode_captions([""] * len(labels), config["context_in_dim"], config["vec_in_dim"])
    latent = torch.zeros(len(labels), 16, size, size)
    noise = comfy.sample.prepare_noise(latent, EVAL["seed"])
    judge, results = Judge(classifier_path), []
    for cfg in EVAL_CFGS:
        started = time.perf_counter()
        samples = comfy.sample.sample(
            patcher, noise, EVAL["steps"], cfg, EVAL["sampler"], EVAL["scheduler"], positive, negative, latent,
            seed=EVAL["seed"], disable_pbar=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        gray = to_gray(latent_preview_rgb(patcher.model.latent_format, samples, 1))  # (N, S, S)
        scores = judge.evaluate(gray, labels)
        logger.info(
            "cfg %g: %.1f %% recognised as their digit, FID-style %.2f", cfg, 100 * scores["accuracy"], scores["fid"]
        )
        if not results:
            name = "SODA reference model" + ("" if size == 16 else f", {size}x{size}")
            draw_grid(gray, labels, grid_path, f"{name}, full compute\n(20 steps euler, cfg {cfg:g})")
        results.append({**EVAL, "cfg": cfg, "samples": len(labels), "sampling_seconds": seconds, **scores})
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    register_pack()
    import_comfy()
    import torch

    from benchmarks.digits import CANVASES, load_images, save_classifier
    from benchmarks.env import load_average

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    variant, canvas = VARIANTS[args.model], CANVASES[args.model]
    out = args.out.resolve() if args.out else None
    files = variant.model_file, canvas.classifier_file, variant.report_file, variant.grid_file
    model_path, classifier_path, report_path, grid_path = (out / f.name if out else f for f in files)
    if args.check:
        model_path, classifier_path = (
            p.with_name(p.stem + ".check" + p.suffix) for p in (model_path, classifier_path)
        )
    started, load_start = time.perf_counter(), load_average()

    gray, labels = load_images()
    classifier, classifier_report = train_classifier(args, canvas, gray, labels)
    with torch.no_grad():
        real_features = classifier.features(canvas.real(gray))
    description = "digits classifier" + (f", {canvas.size}x{canvas.size} canvas" if canvas.placed else "")
    save_classifier(classifier, real_features, classifier_path, {"soda.description": description})

    model = build_model(variant.unet_config, args.seed)
    load_init(model, variant)
    training = train_generator(args, canvas, model, gray, labels)
    training["load_average_end"] = load_average()
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.diffusion_model.state_dict().items()}
    data = serialize(state, metadata(args, variant))
    if len(data) > MAX_BYTES:
        raise SystemExit(f"error: {len(data)} bytes is over the {MAX_BYTES}-byte budget")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    logger.info("wrote %s: %s bytes, sha256 %s", model_path, f"{len(data):,}", digest)

    if args.check:
        same = [
            p.read_bytes() == p.with_name(p.name.replace(".check", "")).read_bytes()
            for p in (model_path, classifier_path)
        ]
        for p in (model_path, classifier_path):
            p.unlink()
        logger.info("check: model %s, classifier %s", *("identical" if s else "DIFFERENT" for s in same))
        return 0 if all(same) else 1

    started_eval = time.perf_counter()
    samples = evaluate(args, canvas.size, model_path, classifier_path, grid_path)
    report = {
        "command": shlex.join(
            ["python", "scripts/train_reference_model.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "model": variant.name,
        "data": variant.data,
        "image_tokens": (canvas.size // variant.unet_config["patch_size"]) ** 2,
        "unet_config": variant.unet_config,
        "parameters": sum(v.numel() for v in state.values()),
        "model_bytes": len(data),
        "model_sha256": digest,
        "threads": args.threads,
        "precision": args.precision,
        "load_average_start": load_start,
        "classifier": classifier_report,
        "generator": training,
        "full_compute_samples": samples,
        "evaluation_seconds": time.perf_counter() - started_eval,
        "total_seconds": time.perf_counter() - started,
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("done in %.1f min; report %s", report["total_seconds"] / 60, report_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
