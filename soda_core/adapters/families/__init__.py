"""One record per DiT family ComfyUI runs; ``FAMILIES`` is the registry ``adapters.family_for`` searches."""

from __future__ import annotations

from ..spec import Family
from . import others
from .flux import CHROMA, FLUX


FAMILIES: tuple[Family, ...] = (FLUX, CHROMA, *others.FAMILIES)
