"""One record per DiT family ComfyUI runs; ``FAMILIES`` is the registry ``adapters.family_for`` searches."""

from __future__ import annotations

from ..spec import Family
from .dualstream import HIDREAM, HUNYUAN_VIDEO, LUMINA2, QWEN_IMAGE
from .flux import CHROMA, FLUX


FAMILIES: tuple[Family, ...] = (FLUX, CHROMA, QWEN_IMAGE, HUNYUAN_VIDEO, LUMINA2, HIDREAM)
