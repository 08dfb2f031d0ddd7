"""Checks of the values a user hands the pack (node inputs), before any work starts.

Every refusal is a ``ValueError`` that names where (the node), the input, the value, what was expected and the fix.
ComfyUI 0.3.75 does not check dropdown values or NaN numbers that arrive over its API for V3 nodes, so the nodes run
these checks themselves (``nodes/inputs.py``); the checks here know nothing about ComfyUI.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import PureWindowsPath


SAVE_SUFFIX = "_00001_.safetensors"  # what Save SODA Profile appends to the last part of the prefix (longest form)
MAX_NAME_BYTES = 255  # file-name limit of common file systems (ext4, NTFS, APFS)
MAX_PREFIX_CHARS = 1024


def _refuse(where: str, name: str, value: object, expected: str, fix: str) -> ValueError:
    return ValueError(f"{where}: {name}={value!r} is not valid; expected {expected}. Fix: {fix}")


def check_number(
    where: str,
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    fix: str | None = None,
) -> None:
    """``value`` is a finite number (an int when ``integer``) in ``[low, high]``; NaN and infinity are refused."""
    kind = "an integer" if integer else "a finite number"
    bounds = {
        (True, True): f" from {low:g} to {high:g}",
        (True, False): f" >= {low:g}",
        (False, True): f" <= {high:g}",
        (False, False): "",
    }[(low is not None, high is not None)]
    advice = fix or f"set {name} to {kind}{bounds}."
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise _refuse(where, name, value, kind + bounds, advice)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise _refuse(where, name, value, kind + bounds, advice)


def check_choice(where: str, name: str, value: object, options: Sequence[object], fix: str | None = None) -> None:
    """``value`` is one of ``options`` (a dropdown's values)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool) and value in options:
        return
    shown = ", ".join(repr(o) for o in options[:20]) + (
        f", ... ({len(options) - 20} more)" if len(options) > 20 else ""
    )
    raise _refuse(where, name, value, f"one of {shown}", fix or f"pick {name} from the node's list.")


def check_bool(where: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _refuse(where, name, value, "true or false", f"set {name} to true or false.")


def check_denoise(where: str, denoise: float) -> None:
    """A denoise of 0 keeps the input latent as it is: there is no step to sample (or to profile)."""
    check_number(where, "denoise", denoise, 0.0, 1.0)
    if denoise == 0.0:
        raise ValueError(
            f"{where}: denoise 0 samples nothing: denoise={denoise!r} keeps the input latent and runs no step, so "
            "there is nothing to measure or accelerate; expected a denoise above 0. Fix: set denoise above 0 (1.0 "
            "samples from pure noise)."
        )


def check_ratio_bounds(where: str, ratio_min: float, ratio_max: float) -> None:
    """The recompute shares UAS may use: ``0 < ratio_min <= ratio_max <= 1``."""
    check_number(where, "ratio_min", ratio_min, 0.0, 1.0)
    check_number(where, "ratio_max", ratio_max, 0.0, 1.0)
    if ratio_min <= 0.0:
        raise ValueError(
            f"{where}: ratio_min={ratio_min!r} is not valid; expected a share above 0 (below it a module is "
            "reused whole; 0 would plan recomputes of no token at all). Fix: set ratio_min to e.g. 0.05."
        )
    if ratio_min > ratio_max:
        raise ValueError(
            f"{where}: ratio_min={ratio_min!r} is above ratio_max={ratio_max!r}; expected ratio_min <= ratio_max "
            "(the smallest and the largest share of image tokens recomputed). Fix: lower ratio_min or raise ratio_max."
        )


def check_filename_prefix(where: str, prefix: object, folder: str, name: str = "filename_prefix") -> None:
    """A file-name prefix relative to ``folder``: ``name`` or ``sub/dir/name``.

    Refused: empty names (which would write a hidden ``._00001_.safetensors``) and names ending in a separator,
    absolute paths and ``..`` (outside the folder), NUL and other control characters, and names too long for the
    file system. Backslashes count as separators here, so a name means the same on every system.
    """
    fix = f"use a name such as 'flux-dev_euler_20' or 'soda/flux-dev_euler_20' (a path inside {folder})."
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError(f"{where}: {name}={prefix!r} is empty; expected a file name for the profile. Fix: {fix}")
    bad = sorted({repr(c) for c in prefix if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")})
    if bad:
        raise ValueError(
            f"{where}: {name}={prefix[:60]!r} contains the control character(s) {', '.join(bad)}; expected "
            f"printable characters only. Fix: {fix}"
        )
    if len(prefix) > MAX_PREFIX_CHARS:
        raise ValueError(
            f"{where}: {name} is {len(prefix)} characters long; expected at most {MAX_PREFIX_CHARS}. Fix: {fix}"
        )
    unified = prefix.replace("\\", "/")
    windows = PureWindowsPath(prefix)
    if unified.startswith("/") or windows.drive or windows.root or os.path.isabs(prefix):
        raise ValueError(
            f"{where}: {name}={prefix!r} is an absolute path; profiles are saved inside {folder}, so "
            f"expected a relative name. Fix: {fix}"
        )
    parts = unified.split("/")
    if any(part.strip() in ("..", ".") for part in parts) or not parts[-1].strip():
        raise ValueError(
            f"{where}: {name}={prefix!r} leaves {folder} or names no file (it ends in a separator, or has "
            f"a '.' or '..' part); expected a file name inside {folder}. Fix: {fix}"
        )
    longest = max(len(part.encode("utf-8")) for part in parts[:-1] + [parts[-1] + SAVE_SUFFIX])
    if longest > MAX_NAME_BYTES:
        raise ValueError(
            f"{where}: {name}={prefix[:40]!r}... has a part of {longest} bytes with the file number and "
            f"suffix; file systems allow {MAX_NAME_BYTES}. Fix: shorten it, e.g. {fix[4:]}"
        )
