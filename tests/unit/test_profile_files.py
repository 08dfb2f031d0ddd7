"""Profile files are trusted for nothing: every defect is a ValueError naming the file, the key and the fix.

Malformed tables plan schedules that still run and give worse images (issue 11: increasing sigmas 21.9 dB, a NaN
sigma 28.4 dB, negative cache errors 27.6 dB against 36.6 dB intact), so the loader and the constructor refuse them.
"""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfyui_soda.soda_core.flops import FlopModel
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
from comfyui_soda.soda_core.planner import PlanConfig, plan
from comfyui_soda.soda_core.profile import SensitivityProfile


LAYOUT = ModelLayout((BlockRef("double_block", 0), BlockRef("single_block", 0)), ("attn", "mlp"))
FIX = "re-profile"


def make_profile(steps: int = 6, k: int = 3, seed: int = 0, **changes: object) -> SensitivityProfile:
    g = torch.Generator().manual_seed(seed)
    cache = 0.05 + 0.1 * torch.rand(steps, 2, 2, k, generator=g)  # (T, L, M, K)
    for t in range(steps):
        cache[t, :, :, t:] = float("nan")  # t < k: nothing k steps back
    prune = cache.unsqueeze(-1) * torch.tensor([0.8, 0.5, 0.2])  # (T, L, M, K, R)
    flops = FlopModel(
        torch.full((2, 2), 10.0, dtype=torch.float64),
        torch.full((2, 2), 1.0, dtype=torch.float64),
        torch.full((2, 2), 9.0, dtype=torch.float64),
        2.0,
        1.0,
    )
    fields: dict[str, object] = {
        "layout": LAYOUT,
        "sigmas": torch.linspace(1, 0, steps + 1, dtype=torch.float64),
        "cache_error": cache,
        "prune_error": prune,
        "prune_ratios": torch.tensor([0.25, 0.5, 0.75]),
        "flops": flops,
        "meta": {"steps": steps, "sampler": "euler", "granularity": "module", "score": "mean"},
    }
    fields.update(changes)
    return SensitivityProfile(**fields)  # type: ignore[arg-type]


def raw_parts(profile: SensitivityProfile) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata ``save_profile`` writes, without the checksum (as files written before it)."""
    tensors = {
        "sigmas": profile.sigmas.double(),
        "cache_error": profile.cache_error.float(),
        "prune_error": profile.prune_error.float(),
        "prune_ratios": profile.prune_ratios.float(),
        **profile.flops.to_tensors(),
    }
    metadata = {
        "soda.format_version": "1",
        "soda.layout": json.dumps(profile.layout.to_json()),
        "soda.meta": json.dumps(profile.meta),
    }
    return tensors, metadata


def write_raw(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def refused(path: Path, *fragments: str) -> str:
    with pytest.raises(ValueError) as error:
        SensitivityProfile.load(path)
    message = str(error.value)
    assert str(path) in message and FIX in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ----------------------------------------------------------------------------------------------- round trip


def test_saved_profile_round_trips_with_a_checksum(tmp_path):
    profile = make_profile()
    profile.save(tmp_path / "p.safetensors")
    loaded = SensitivityProfile.load(tmp_path / "p.safetensors")
    assert loaded.layout == LAYOUT and loaded.meta == profile.meta
    assert torch.equal(loaded.cache_error.nan_to_num(-1), profile.cache_error.nan_to_num(-1))
    header_length = struct.unpack("<Q", (tmp_path / "p.safetensors").read_bytes()[:8])[0]
    header = json.loads((tmp_path / "p.safetensors").read_bytes()[8 : 8 + header_length])
    assert len(header["__metadata__"]["soda.sha256"]) == 64


def test_files_without_a_checksum_still_load(tmp_path):
    path = write_raw(tmp_path / "old.safetensors", *raw_parts(make_profile()))
    assert SensitivityProfile.load(path).steps == 6


def test_legal_nan_and_infinite_prune_error_are_accepted():
    """NaN at t < k, NaN in a module a layer lacks (all its FLOPs 0), E_p = +inf ("never prune")."""
    base = make_profile()
    full, fixed, per = base.flops.full.clone(), base.flops.fixed.clone(), base.flops.per_ratio.clone()
    full[1, 0] = fixed[1, 0] = per[1, 0] = 0.0  # layer 1 has no attention
    cache, prune = base.cache_error.clone(), base.prune_error.clone()
    cache[:, 1, 0] = float("nan")
    prune[:, 1, 0] = float("nan")
    prune[:, 0, 1] = float("inf")
    profile = make_profile(
        cache_error=cache, prune_error=prune, flops=FlopModel(full, fixed, per, base.flops.base, base.flops.record)
    )
    assert plan(profile, PlanConfig(target=1.5)).steps == 6


# ------------------------------------------------------------------------------- one defect, one clear refusal


CASES = {
    # name: (key to edit, edit on a copy of the tensor, fragments the message must hold)
    "increasing sigmas": ("sigmas", lambda s: s.flip(0), ("sigmas", "decrease strictly")),
    "nan sigma": ("sigmas", lambda s: s.index_fill(0, torch.tensor([2]), math.nan), ("sigmas[2]", "finite")),
    "negative last sigma": ("sigmas", lambda s: s - 0.5, ("sigmas", ">= 0")),
    "negative cache error": (
        "cache_error",
        lambda c: c.index_fill(0, torch.tensor([4]), -0.3),
        ("cache_error", "negative"),
    ),
    "nan where measured": (
        "cache_error",
        lambda c: c.index_fill(0, torch.tensor([5]), math.nan),
        ("cache_error", "step 5", "EasyCache"),
    ),
    "inf cache error": (
        "cache_error",
        lambda c: c.index_fill(0, torch.tensor([5]), math.inf),
        ("cache_error", "+inf"),
    ),
    "huge cache error": (
        "cache_error",
        lambda c: c.index_fill(0, torch.tensor([5]), 3e38),
        ("cache_error", "above 2"),
    ),
    "negative prune error": (
        "prune_error",
        lambda p: p.index_fill(0, torch.tensor([3]), -1.0),
        ("prune_error", "negative"),
    ),
    "minus inf prune error": (
        "prune_error",
        lambda p: p.index_fill(0, torch.tensor([3]), -math.inf),
        ("prune_error", "-inf"),
    ),
    "prune ratios out of order": ("prune_ratios", lambda r: r.flip(0), ("prune_ratios", "increase strictly")),
    "nan flops": ("flops.full", lambda f: f.index_fill(0, torch.tensor([0]), math.nan), ("flops.full", "finite")),
    "negative flops": ("flops.fixed", lambda f: -f, ("flops.fixed", ">= 0")),
    "zero flops": ("flops.full", lambda f: f * 0, ("flops.full", "positive")),
    "overflowing flops": ("flops.scalars", lambda f: f * 1e307, ("overflow",)),
    "float16 errors": ("cache_error", lambda c: c.half(), ("cache_error", "F16", "expected F32")),
    "int sigmas": ("sigmas", lambda s: (s * 10).long(), ("sigmas", "I64", "expected F64")),
    "3-d cache error": ("cache_error", lambda c: c[..., 0], ("cache_error", "4 dimension")),
    "short sigmas": ("sigmas", lambda s: s[:-1], ("sigmas has shape (6,)", "expected (7,)")),
    "prune error of other steps": ("prune_error", lambda p: p[:-1], ("prune_error has shape",)),
    "three scalars": ("flops.scalars", lambda f: torch.cat([f, f[:1]]), ("flops.scalars", "(2,)")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_tensor_is_refused_naming_the_file_and_key(tmp_path, name):
    key, edit, fragments = CASES[name]
    tensors, metadata = raw_parts(make_profile())
    tensors[key] = edit(tensors[key].clone())
    refused(write_raw(tmp_path / "bad.safetensors", tensors, metadata), *fragments)


METADATA_CASES = {
    "bogus layout json": ("soda.layout", "{not json", ("soda.layout", "not valid JSON")),
    "layout of another model": (
        "soda.layout",
        json.dumps({"blocks": [["double_block", 0]], "modules": ["attn", "mlp"]}),
        ("cache_error has shape",),
    ),
    "layout without modules": ("soda.layout", json.dumps({"blocks": [["b", 0]], "modules": []}), ("soda.layout",)),
    "layout with a bad block": (
        "soda.layout",
        json.dumps({"blocks": [["b", "x"]], "modules": ["m"]}),
        ("soda.layout",),
    ),
    "bogus meta json": ("soda.meta", "[1, 2", ("soda.meta", "not valid JSON")),
    "meta not an object": ("soda.meta", "[1, 2]", ("soda.meta", "expected an object")),
    "deep json": ("soda.meta", "[" * 100000 + "]" * 100000, ("soda.meta", "not valid JSON")),
    "unknown granularity": ("soda.meta", json.dumps({"granularity": "tokens"}), ("soda.meta.granularity", "module")),
    "unknown score": ("soda.meta", json.dumps({"score": "max"}), ("soda.meta.score", "abs_mean")),
    "other version": ("soda.format_version", "2", ("soda.format_version", "'2'", "expected '1'")),
    "no version": ("soda.format_version", None, ("soda.format_version", "None")),
    "no layout": ("soda.layout", None, ("soda.layout", "missing")),
}


@pytest.mark.parametrize("name", list(METADATA_CASES))
def test_malformed_metadata_is_refused_naming_the_file_and_key(tmp_path, name):
    key, value, fragments = METADATA_CASES[name]
    tensors, metadata = raw_parts(make_profile())
    if value is None:
        del metadata[key]
    else:
        metadata[key] = value
    refused(write_raw(tmp_path / "bad.safetensors", tensors, metadata), *fragments)


def test_missing_renamed_and_extra_tensors_are_refused(tmp_path):
    tensors, metadata = raw_parts(make_profile())
    refused(
        write_raw(tmp_path / "a.safetensors", {k: v for k, v in tensors.items() if k != "flops.full"}, metadata),
        "flops.full",
        "missing",
    )
    renamed = {("sigma" if k == "sigmas" else k): v for k, v in tensors.items()}
    refused(write_raw(tmp_path / "b.safetensors", renamed, metadata), "sigmas", "missing")
    refused(write_raw(tmp_path / "c.safetensors", {**tensors, "extra": torch.zeros(1)}, metadata), "extra")


def test_header_length_is_bounded_before_parsing(tmp_path):
    from comfyui_soda.soda_core import profile_io

    good = tmp_path / "good.safetensors"
    make_profile().save(good)
    body = good.read_bytes()
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + body[8:])
    refused(huge, "header", "length field")
    big = tmp_path / "big.safetensors"
    big.write_bytes(struct.pack("<Q", profile_io.MAX_HEADER_BYTES + 1) + b" " * (profile_io.MAX_HEADER_BYTES + 16))
    refused(big, "header", f"at most {profile_io.MAX_HEADER_BYTES}")
    for name, blob in {"empty": b"", "short": b"\x01\x02", "not json": struct.pack("<Q", 4) + b"abcd"}.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        refused(path, "header")
    refused(tmp_path / "absent.safetensors", "file", "cannot be read")


def test_a_flipped_bit_inside_a_value_is_found_by_the_checksum(tmp_path):
    path = tmp_path / "p.safetensors"
    make_profile().save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # the low bits of one FLOPs scalar: still a valid, plausible number
    path.write_bytes(bytes(data))
    refused(path, "soda.sha256", "changed or damaged")


def test_in_memory_profiles_are_checked_too():
    with pytest.raises(ValueError, match="sigmas must decrease strictly"):
        make_profile(sigmas=torch.linspace(0, 1, 7, dtype=torch.float64))
    cache = make_profile().cache_error.clone()
    cache[3, 0, 1, 0] = -0.2
    with pytest.raises(ValueError, match=r"cache_error at step 3, layer 0, module 1 \(mlp\), distance 1 is negative"):
        make_profile(cache_error=cache)
    with pytest.raises(ValueError, match="sigmas has shape"):
        make_profile(sigmas=torch.linspace(1, 0, 3, dtype=torch.float64))


def test_resampling_keeps_never_prune_markers_infinite():
    """E_p = +inf ("never prune attention") read at an exact profile step must stay +inf, not 0·inf = NaN."""
    profile = make_profile(steps=6).without_pruning("attn")
    on_grid = torch.cat([profile.sigmas[:-1:2], profile.sigmas[-1:]])  # (4,): every other profiled sigma, then 0
    resampled = profile.resample(on_grid)
    used = resampled.prune_error[1:, :, 0, 0]  # distance 1, attention
    assert bool((used == math.inf).all()), used
    assert plan(resampled, PlanConfig(target=1.2)).steps == 3


# ------------------------------------------------------------------------------------------------------ fuzzing


def _mutations(rng: random.Random, data: bytes, profile: SensitivityProfile, tmp: Path) -> tuple[str, bytes]:
    """One random corruption of a saved profile: raw bytes, or a rebuilt file with one tensor or entry changed."""
    kind = rng.choice(["truncate", "flip", "drop", "rename", "dtype", "shape", "values", "metadata", "header"])
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "flip":
        blob = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(len(blob))] ^= rng.randint(1, 255)
        return kind, bytes(blob)
    if kind == "header":
        length = struct.unpack("<Q", data[:8])[0]
        new_length = rng.choice([0, 1, length - 1, length + 1, len(data), 2**32, 2**63])
        return kind, struct.pack("<Q", new_length) + data[8:]
    tensors, metadata = raw_parts(profile)
    key = rng.choice(sorted(tensors))
    if kind == "drop":
        del tensors[key]
    elif kind == "rename":
        tensors[key + rng.choice(["_", ".x", "s"])] = tensors.pop(key)
    elif kind == "dtype":
        tensors[key] = tensors[key].to(
            rng.choice([torch.float16, torch.bfloat16, torch.int64, torch.float32, torch.uint8])
        )
    elif kind == "shape":
        tensors[key] = rng.choice(
            [tensors[key].flatten(), tensors[key][:1], torch.cat([tensors[key]] * 2), tensors[key][None]]
        )
    elif kind == "values":
        flat = tensors[key].flatten().clone()
        i = rng.randrange(flat.numel()) if flat.numel() else 0
        if flat.numel():
            flat[i] = rng.choice([math.nan, -math.inf, math.inf, -1.0, 1e30, 0.0, 2.5])
        tensors[key] = flat.reshape(tensors[key].shape)
        if key == "sigmas" and rng.random() < 0.5:
            tensors[key] = tensors[key].flip(0)
    else:
        entry = rng.choice(sorted(metadata))
        metadata[entry] = rng.choice(
            ["", "{", "null", "[]", "1", '{"blocks": 1}', metadata[entry][::-1], "\u00ff" * 3]
        )
    path = tmp / "rebuilt.safetensors"
    write_raw(path, tensors, metadata)
    return kind, path.read_bytes()


def test_fuzzed_profile_files_load_or_are_refused_naming_the_file(tmp_path):
    """A seeded fuzz over corruptions of a saved profile: each outcome is a valid profile or a ValueError that names
    the file; no other exception type ever escapes. Byte flips and truncations of a checksummed file never load."""
    rng = random.Random(11)
    profile = make_profile()
    good = tmp_path / "good.safetensors"
    profile.save(good)
    data = good.read_bytes()
    outcomes: dict[tuple[str, str], int] = {}
    for i in range(400):
        kind, blob = _mutations(rng, data, profile, tmp_path)
        path = tmp_path / f"fuzz_{i}.safetensors"
        path.write_bytes(blob)
        try:
            loaded = SensitivityProfile.load(path)
        except ValueError as error:
            assert str(path) in str(error), (kind, str(error))
            result = "refused"
        else:
            assert isinstance(loaded, SensitivityProfile)
            assert kind not in ("truncate",) and (kind != "flip" or blob == data), (kind, "corrupt file loaded")
            result = "loaded"
        outcomes[kind, result] = outcomes.get((kind, result), 0) + 1
        path.unlink()
    for kind in ("truncate", "flip", "drop", "rename", "dtype", "shape", "values", "metadata", "header"):
        assert outcomes.get((kind, "refused"), 0) > 0, (kind, outcomes)
