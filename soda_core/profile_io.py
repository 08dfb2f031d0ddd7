"""Profile files: one ``.safetensors`` with the error tables, the FLOP model and JSON metadata.

Reading trusts nothing in the file. The header length is read and bounded before anything is parsed, the header is
checked key by key (every tensor present, nothing else, the dtype and shape each must have) before a tensor is
read, the metadata must be the JSON this version writes, and the values must pass ``profile_checks``. Files written
by ``save_profile`` carry a SHA-256 of their tensors and metadata (``soda.sha256``), so a flipped bit inside a value
that is still in range is found too; files without one (written before it existed) are checked for everything else.

Every refusal is one ``ValueError`` that names the file, the key, what was expected and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from .flops import FlopModel
from .layout import BlockRef, Granularity, ModelLayout
from .profile import FORMAT_VERSION, SensitivityProfile
from .profile_checks import ProfileProblems
from .timing import TIME_KEYS, TimeModel
from .tokens import TokenScore


MAX_HEADER_BYTES = 16 * 2**20  # a profile's header is a few kB; anything near this is not a profile
FIX = "Fix: re-profile: run Profile Sensitivity (SODA) on the model and save the result with Save SODA Profile."
VERSION_KEY, LAYOUT_KEY, META_KEY, HASH_KEY = "soda.format_version", "soda.layout", "soda.meta", "soda.sha256"
TENSORS = {  # key -> (safetensors dtype, torch dtype, number of dimensions)
    "sigmas": ("F64", torch.float64, 1),
    "cache_error": ("F32", torch.float32, 4),
    "prune_error": ("F32", torch.float32, 5),
    "prune_ratios": ("F32", torch.float32, 1),
    "flops.full": ("F64", torch.float64, 2),
    "flops.fixed": ("F64", torch.float64, 2),
    "flops.per_ratio": ("F64", torch.float64, 2),
    "flops.scalars": ("F64", torch.float64, 1),
}
OPTIONAL = {  # tensors of newer profiles; a file without them has no predictor errors (compensation) / no times
    "forecast_error": ("F32", torch.float32, 6),
    "forecast_weight": ("F32", torch.float32, 5),
    "time.full": ("F64", torch.float64, 2),
    "time.fixed": ("F64", torch.float64, 2),
    "time.per_ratio": ("F64", torch.float64, 2),
    "time.layers": ("F64", torch.float64, 2),
    "time.scalars": ("F64", torch.float64, 1),
}


class _Refused(Exception):
    """One defect of the file: ``key`` and what is wrong with it (turned into the ValueError by ``load_profile``)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key, self.problem = key, problem


# ------------------------------------------------------------------------------------------------------- writing


def save_profile(profile: SensitivityProfile, path: str | Path) -> None:
    from safetensors.torch import save_file

    tensors = {
        "sigmas": profile.sigmas.double().contiguous(),
        "cache_error": profile.cache_error.float().contiguous(),
        "prune_error": profile.prune_error.float().contiguous(),
        "prune_ratios": profile.prune_ratios.float().contiguous(),
        **{k: v.double().contiguous() for k, v in profile.flops.to_tensors().items()},
    }
    if not profile.has_prune_error:
        tensors["prune_error"] = torch.zeros(*profile.cache_error.shape, 0)  # (T, L, M, K, 0)
    if profile.has_forecasts:
        tensors["forecast_error"] = profile.forecast_error.float().contiguous()
        tensors["forecast_weight"] = profile.forecast_weight.float().contiguous()
    if profile.time is not None:
        tensors.update({k: v.double().clone() for k, v in profile.time.to_tensors().items()})  # own storage
    metadata = {
        VERSION_KEY: str(FORMAT_VERSION),
        LAYOUT_KEY: json.dumps(profile.layout.to_json()),
        META_KEY: json.dumps(profile.meta, sort_keys=True),
    }
    metadata[HASH_KEY] = content_hash(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


def content_hash(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over every tensor (key, dtype, shape, bytes) and every metadata entry but the hash itself."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    for key in sorted(k for k in metadata if k != HASH_KEY):
        digest.update(f"{key}={metadata[key]}|".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------- reading


def load_profile(path: str | Path) -> SensitivityProfile:
    try:
        header = _read_header(path)
        metadata = _metadata(header)
        _check_tensor_entries(header)
        tensors = _read_tensors(path)
        if HASH_KEY in metadata and content_hash(tensors, metadata) != metadata[HASH_KEY]:
            raise _Refused(HASH_KEY, "does not match the file's tensors and metadata: the file was changed or damaged")
        return _profile(tensors, metadata)
    except _Refused as refused:
        raise ValueError(f"SODA profile {path}: {refused.key}: {refused.problem}. {FIX}") from None
    except ProfileProblems as bad:
        raise ValueError(f"SODA profile {path}: " + "; ".join(bad.problems) + f". {FIX}") from None


def _read_header(path: str | Path) -> dict[str, Any]:
    """The safetensors header (an 8-byte little-endian length, then that many bytes of JSON), length bounded."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            start = file.read(8)
            if len(start) < 8:
                raise _Refused("header", f"the file has {size} bytes, expected a safetensors file (8-byte length)")
            (length,) = struct.unpack("<Q", start)
            if length > MAX_HEADER_BYTES or length > size - 8:
                raise _Refused(
                    "header",
                    f"its length field says {length} bytes, expected at most {min(MAX_HEADER_BYTES, size - 8)} "
                    "(the file is truncated, damaged or not a safetensors file)",
                )
            raw = file.read(length)
    except OSError as error:
        raise _Refused("file", f"cannot be read ({error.strerror or error})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise _Refused("header", f"is not valid JSON ({type(error).__name__}: {str(error)[:120]})") from None
    if not isinstance(header, dict):
        raise _Refused("header", f"is a JSON {type(header).__name__}, expected an object")
    return header


def _metadata(header: dict[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Refused("__metadata__", "is missing or not a string table, expected the metadata of a SODA profile")
    version = metadata.get(VERSION_KEY)
    if version != str(FORMAT_VERSION):
        raise _Refused(VERSION_KEY, f"is {version!r}, expected '{FORMAT_VERSION}' (a SODA profile of this version)")
    for key in (LAYOUT_KEY, META_KEY):
        if key not in metadata:
            raise _Refused(key, "is missing from the metadata")
    return metadata


def _check_tensor_entries(header: dict[str, Any]) -> None:
    found = {key for key in header if key != "__metadata__"}
    missing, unknown = sorted(set(TENSORS) - found), sorted(found - set(TENSORS) - set(OPTIONAL))
    if missing:
        raise _Refused(missing[0], "is missing, expected a tensor of that name")
    if unknown:
        raise _Refused(unknown[0], f"is not a tensor of a SODA profile (expected exactly {', '.join(TENSORS)})")
    for key, (dtype, _, dims) in {**TENSORS, **OPTIONAL}.items():
        if key not in header:
            continue
        entry = header[key]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("dtype") != dtype:
            found_dtype = entry.get("dtype") if isinstance(entry, dict) else entry
            raise _Refused(key, f"has dtype {found_dtype!r}, expected {dtype}")
        if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
            raise _Refused(key, f"has shape {shape!r}, expected a list of sizes")
        empty_prune = key == "prune_error" and 0 in shape  # no pruning measured: any empty shape (older files)
        if len(shape) != dims and not empty_prune:
            raise _Refused(key, f"has shape {shape}, expected {dims} dimension(s)")


def _is_size(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**40


def _read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: file.get_tensor(key) for key in (*TENSORS, *OPTIONAL) if key in file.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as error:
        raise _Refused("header", f"does not describe the file's data ({str(error)[:160]})") from None


def _profile(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> SensitivityProfile:
    for key, (_, dtype, _) in {**TENSORS, **OPTIONAL}.items():
        if (
            key in tensors and tensors[key].dtype != dtype
        ):  # safetensors honours the header, checked above; never trust it twice
            raise _Refused(key, f"has dtype {tensors[key].dtype}, expected {dtype}")
    scalars = tensors["flops.scalars"]
    if scalars.shape != (2,):
        raise _Refused("flops.scalars", f"has shape {tuple(scalars.shape)}, expected (2,) (base and record FLOPs)")
    base, record = (float(v) for v in scalars.tolist())
    flops = FlopModel(tensors["flops.full"], tensors["flops.fixed"], tensors["flops.per_ratio"], base, record)
    return SensitivityProfile(
        time=_time_model(tensors),
        layout=_layout(metadata[LAYOUT_KEY]),
        sigmas=tensors["sigmas"],
        cache_error=tensors["cache_error"],
        prune_error=tensors["prune_error"],
        prune_ratios=tensors["prune_ratios"],
        flops=flops,
        meta=_meta(metadata[META_KEY]),
        **{key: tensors[key] for key in ("forecast_error", "forecast_weight") if key in tensors},
    )


def _time_model(tensors: dict[str, torch.Tensor]) -> TimeModel | None:
    """The time model of a file that has one (all of ``TIME_KEYS``), None for a file without (older versions)."""
    present = [key for key in TIME_KEYS if key in tensors]
    if not present:
        return None
    if len(present) != len(TIME_KEYS):
        missing = next(key for key in TIME_KEYS if key not in tensors)
        raise _Refused(missing, f"is missing, expected it with {', '.join(present)} (a time model is all of them)")
    try:
        return TimeModel.from_tensors(tensors)
    except ValueError as error:
        raise _Refused("time.layers", str(error)) from None


def _json(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _Refused(key, f"is not valid JSON ({type(error).__name__}: {str(error)[:120]})") from None


def _layout(text: str) -> ModelLayout:
    data = _json(LAYOUT_KEY, text)
    expected = 'expected {"blocks": [[kind, index], ...], "modules": [name, ...]}, each non-empty and unique'
    blocks = data.get("blocks") if isinstance(data, dict) else None
    modules = data.get("modules") if isinstance(data, dict) else None
    if not isinstance(blocks, list) or not isinstance(modules, list) or not blocks or not modules:
        raise _Refused(LAYOUT_KEY, f"is {text[:120]!r}, {expected}")
    pairs = [b for b in blocks if isinstance(b, list) and len(b) == 2 and isinstance(b[0], str) and _is_size(b[1])]
    names = [m for m in modules if isinstance(m, str) and m]
    if len(pairs) != len(blocks) or len(names) != len(modules):
        raise _Refused(LAYOUT_KEY, f"is {text[:120]!r}, {expected}")
    refs = tuple(BlockRef(kind, index) for kind, index in pairs)
    if len(set(refs)) != len(refs) or len(set(names)) != len(names):
        raise _Refused(LAYOUT_KEY, f"names a block or module twice, {expected}")
    default = Granularity.BLOCK if names == ["block"] else Granularity.MODULE
    granularity = data.get("granularity", default.value)
    if granularity not in tuple(g.value for g in Granularity):
        raise _Refused(f"{LAYOUT_KEY}.granularity", f"is {granularity!r}, expected 'module' or 'block'")
    try:
        return ModelLayout(refs, tuple(names), Granularity(granularity))
    except ValueError as error:
        raise _Refused(LAYOUT_KEY, str(error)) from None


def _meta(text: str) -> dict[str, Any]:
    meta = _json(META_KEY, text)
    if not isinstance(meta, dict):
        raise _Refused(META_KEY, f"is a JSON {type(meta).__name__}, expected an object")
    choices = {"granularity": tuple(g.value for g in Granularity), "score": tuple(s.value for s in TokenScore)}
    for key, allowed in choices.items():
        if key in meta and meta[key] not in allowed:
            raise _Refused(f"{META_KEY}.{key}", f"is {meta[key]!r}, expected one of {', '.join(allowed)}")
    return meta
