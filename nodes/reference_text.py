"""The stand-in text conditioning of the reference nodes: fixed word vectors instead of a text encoder, class labels,
and the text widths a model's configuration gives (so the stand-in conditions Flux, Wan, Qwen-Image... alike)."""

import hashlib
import inspect
import logging
import re
from typing import Any

import torch


logger = logging.getLogger(__name__)

MAX_WORDS = 64
# Config keys that give the width of a model's text context: Flux.1 / Flux.2 / Chroma / HunyuanVideo, Wan, Qwen-Image.
CONTEXT_WIDTH_KEYS = ("context_in_dim", "text_dim", "joint_attention_dim")
POOLED_WIDTH_KEY = "vec_in_dim"  # the pooled text vector of Flux.1 and HunyuanVideo; absent or None: none taken


def _word_vector(word: str, width: int) -> torch.Tensor:
    """A fixed randn vector for ``word``: a generator seeded with the first 8 bytes of ``sha256(word)``."""
    seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return torch.randn(width, generator=generator, dtype=torch.float32)


def encode_text(text: str, context_dim: int, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stand-in text encoder: (cond [1, n_words, context_dim], pooled [1, pooled_dim]).

    Words are the lower-cased ``\\w+`` runs of ``text`` (an empty prompt counts as one empty word; at most 64 are
    kept). The pooled vector is the mean word vector, truncated to ``pooled_dim``, or tiled up to it when wider.
    """
    words = re.findall(r"\w+", text.lower()) or [""]
    if len(words) > MAX_WORDS:
        logger.warning("SODA Reference Text Encode: keeping the first %d of %d words", MAX_WORDS, len(words))
        words = words[:MAX_WORDS]
    cond = torch.stack([_word_vector(word, context_dim) for word in words]).unsqueeze(0)
    mean = cond[0].mean(dim=0)
    pooled = mean.repeat(-(-pooled_dim // context_dim))[:pooled_dim]
    return cond, pooled.unsqueeze(0)


def encode_captions(captions: list[str], context_dim: int, pooled_dim: int) -> list[list[Any]]:
    """One CONDITIONING entry for a batch of captions: cond [N, words, context_dim] and pooled [N, pooled_dim].

    Row ``i`` conditions latent ``i`` of a batch of ``N`` (ComfyUI keeps a conditioning batch that equals the latent
    batch). Every caption must have the same number of words, as rows of one tensor do.
    """
    encoded = [encode_text(caption, context_dim, pooled_dim) for caption in captions]
    lengths = sorted({cond.shape[1] for cond, _ in encoded})
    if len(lengths) > 1:
        raise ValueError(f"encode_captions needs captions of one word count; got {lengths} words in {captions!r}.")
    cond = torch.cat([c for c, _ in encoded])
    pooled = torch.cat([p for _, p in encoded])
    return [[cond, {"pooled_output": pooled}]]


def label_numbers(text: str, highest: str = "") -> list[int]:
    """The numbers of ``"3"``, ``"0 1 2"``, ``"0,4,4"`` or ranges like ``"0-9"``, in order (no model needed, so the
    prompt is refused when queued); ``highest`` (e.g. ``"9"``) completes the fix of the error."""
    labels: list[int] = []
    for part in re.split(r"[\s,;]+", text.strip()):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            numbers = f"class numbers 0..{highest}" if highest else "class numbers"
            raise ValueError(
                f"SODA Reference Class Encode: {part!r} in labels={text!r} is not a class number or range. "
                f"Fix: write {numbers} separated by spaces or commas, or a range like 0-9."
            )
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        labels.extend(range(first, last + 1) if first <= last else range(first, last - 1, -1))
    return labels


def parse_labels(text: str, classes: tuple[str, ...]) -> list[int]:
    """Class indices from ``"3"``, ``"0 1 2"``, ``"0,4,4"`` or ranges like ``"0-9"``; each must name a class."""
    labels = label_numbers(text, str(len(classes) - 1))
    wrong = sorted({label for label in labels if not 0 <= label < len(classes)})
    if not labels or wrong:
        problem = "names no class" if not labels else f"names class(es) {wrong}, which this model does not have"
        raise ValueError(
            f"SODA Reference Class Encode: labels={text!r} {problem}. This model knows {len(classes)} classes: "
            + ", ".join(f"{i} = {caption!r}" for i, caption in enumerate(classes))
            + ". Fix: use numbers from 0 to "
            + f"{len(classes) - 1}, e.g. '0-9' for one of each."
        )
    return labels


def model_config(model: Any) -> dict[str, Any]:
    """The diffusion model's configuration: its ``unet_config`` over the defaults of its class's constructor (ComfyUI's
    detection leaves out what a family does not vary, e.g. Wan's text width)."""
    diffusion_model = model.get_model_object("diffusion_model")
    parameters = inspect.signature(type(diffusion_model).__init__).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **model.model.model_config.unet_config}


def text_widths(model: Any) -> tuple[int, int | None]:
    """(context width, pooled width or None) of the text conditioning ``model`` takes, from its configuration."""
    config = model_config(model)
    context = next((config[key] for key in CONTEXT_WIDTH_KEYS if isinstance(config.get(key), int)), None)
    if context is None:
        name = type(model.get_model_object("diffusion_model")).__name__
        raise ValueError(
            f"SODA Reference Text Encode: the configuration of this {name} model gives no text-context width (looked "
            f"for {', '.join(CONTEXT_WIDTH_KEYS)}). Fix: encode the prompt with the model's own text encoder (CLIP "
            "Text Encode)."
        )
    pooled = config.get(POOLED_WIDTH_KEY)
    return context, pooled if isinstance(pooled, int) and pooled > 0 else None
