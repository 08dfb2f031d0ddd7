"""One record per DiT family ComfyUI runs; ``FAMILIES`` is the registry ``adapters.family_for`` searches."""

from __future__ import annotations

from ..spec import Family
from . import others
from .dualstream import HIDREAM, HUNYUAN_VIDEO, LUMINA2, QWEN_IMAGE
from .flux import CHROMA, FLUX
from .mmdit import AURAFLOW, HUNYUAN_DIT, PIXART, SD3
from .video import COSMOS_PREDICT2, LTXV, UNSERVED, WAN, WAN_VACE


FAMILIES: tuple[Family, ...] = (
    FLUX,
    CHROMA,
    SD3,
    AURAFLOW,
    HUNYUAN_DIT,
    PIXART,
    WAN,
    WAN_VACE,
    LTXV,
    COSMOS_PREDICT2,
    QWEN_IMAGE,
    HUNYUAN_VIDEO,
    LUMINA2,
    HIDREAM,
    *others.FAMILIES,
    *UNSERVED,
)
