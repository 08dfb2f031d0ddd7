"""Profiles kept by what they depend on, for the one-node path (SODA Accelerate).

A profile depends on the model (its weights and every patch applied to them, such as LoRAs), the sampler, the sigma
grid (scheduler, step count and denoise together), the latent's shape (the token count), whether CFG runs a second
batch row, and what is measured (module or block granularity, with or without pruning errors); not on the prompt
or the seed. ``ProfileKey`` is that; ``ProfileStore`` keeps one file per key in a folder of its model::

    <root>/<model>/<sampler>-<steps>steps-<grid>-<shape>-<cfg>-<measured>.safetensors

A file that fails to load (damaged, of another pack version) is reported and treated as absent: it is profiled
again and replaced, never used.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .profile import SensitivityProfile


logger = logging.getLogger(__name__)


def grid_digest(sigmas: torch.Tensor) -> str:
    """A short digest of a sigma grid (rounded so float noise does not change it)."""
    values = ",".join(f"{float(s):.6g}" for s in sigmas.double().cpu())
    return hashlib.sha256(values.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ProfileKey:
    model: str  # identity of the weights with their patches (a hex digest)
    sampler: str
    steps: int
    grid: str  # grid_digest of the run's sigmas
    latent: tuple[int, ...]  # one sample's latent shape (C, *dims): the token count
    guided: bool  # CFG != 1: cond and uncond rows
    measured: str  # e.g. "module+prune", "module", "block"

    def setting(self) -> tuple[str, str, tuple[int, ...], bool, str]:
        """Everything but the sigma grid: a profile of the same setting can be re-planned onto another grid."""
        return self.model, self.sampler, self.latent, self.guided, self.measured

    def filename(self) -> str:
        shape = "x".join(str(d) for d in self.latent)
        cfg = "cfg" if self.guided else "nocfg"
        return f"{self.sampler}-{self.steps}steps-{self.grid}-{shape}-{cfg}-{self.measured}.safetensors"

    def to_meta(self) -> dict[str, object]:
        return {
            "model_id": self.model,
            "sampler": self.sampler,
            "steps": self.steps,
            "grid": self.grid,
            "latent": list(self.latent),
            "guided": self.guided,
            "measured": self.measured,
        }


@dataclass(frozen=True)
class Found:
    profile: SensitivityProfile
    path: Path
    exact: bool  # measured on this very grid (else: the same setting on another grid, to re-plan from)


class ProfileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: ProfileKey) -> Path:
        return self.root / key.model[:16] / key.filename()

    def find(self, key: ProfileKey) -> tuple[Found | None, list[str]]:
        """The profile of ``key``, else one of the same setting on another grid (the one with the most steps), and
        the problems of any file that could not be used."""
        problems: list[str] = []
        exact = self.path(key)
        if exact.is_file():
            profile = self._load(exact, key, problems)
            if profile is not None:
                return Found(profile, exact, True), problems
        candidates = []
        for path in sorted(exact.parent.glob(f"{key.sampler}-*.safetensors")) if exact.parent.is_dir() else []:
            if path == exact:
                continue
            profile = self._load(path, key, problems, same_grid=False)
            if profile is not None:
                candidates.append((profile.steps, path, profile))
        if candidates:
            _, path, profile = max(candidates, key=lambda c: c[0])
            return Found(profile, path, False), problems
        return None, problems

    def save(self, key: ProfileKey, profile: SensitivityProfile) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        profile.save(partial)
        partial.replace(path)  # never a half-written profile under the key's name
        return path

    def _load(
        self, path: Path, key: ProfileKey, problems: list[str], same_grid: bool = True
    ) -> SensitivityProfile | None:
        try:
            profile = SensitivityProfile.load(path)
        except ValueError as error:
            problems.append(f"{path.name} cannot be used ({error}); it will be profiled again")
            logger.warning("SODA: stored profile %s cannot be used: %s", path, error)
            return None
        stored = profile.meta.get("key", {})
        wanted = {**key.to_meta(), "latent": list(key.latent)}
        fields = ("model_id", "sampler", "latent", "guided", "measured") + (("grid",) if same_grid else ())
        if any(stored.get(f) != wanted[f] for f in fields):
            if same_grid:
                problems.append(f"{path.name} was measured for another setting; it will be profiled again")
            return None
        return profile
