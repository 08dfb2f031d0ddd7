"""Build the pack's embedded reference model: models/soda_reference_flux.safetensors.

A small Flux-architecture DiT (2 double + 4 single blocks, hidden 256) built with ComfyUI's own classes
(``comfy.supported_models.Flux``), with seeded random weights (it is not trained: its images are noise-like, but
every code path SODA touches runs exactly as for a real Flux checkpoint). Saved as float16 with the architecture in
the safetensors metadata, so ``nodes/reference_model.py`` can rebuild it without guessing.

The output is deterministic: running the script twice gives byte-identical files (``--check`` verifies that the
file on disk matches a fresh build).

Usage: .venv/bin/python scripts/make_reference_model.py [--comfy <ComfyUI tree>] [--out PATH] [--check]
"""

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from comfy_env import ROOT, comfyui_dir, import_comfy, register_pack


DEFAULT_OUT = ROOT / "models" / "soda_reference_flux.safetensors"
MAX_BYTES = 25 * 1000 * 1000
SEED = 0

UNET_CONFIG: dict[str, Any] = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": 256,
    "context_in_dim": 256,
    "hidden_size": 256,
    "mlp_ratio": 4.0,
    "num_heads": 4,
    "depth": 2,
    "depth_single_blocks": 4,
    "axes_dim": [16, 24, 24],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": True,
}

DESCRIPTION = (
    "SODA reference model: a tiny Flux-architecture DiT (hidden 256, 4 heads, 2 double + 4 single blocks) with "
    f"seeded random weights (seed {SEED}), not trained. Built by scripts/make_reference_model.py with ComfyUI's "
    "comfy.supported_models.Flux; for exercising SODA profiling, scheduling and caching on CPU."
)


def build_state_dict() -> dict[str, Any]:
    """The seeded diffusion model's state dict, float16, contiguous, in the model's key order."""
    import comfy.supported_models
    import torch

    from comfyui_soda.soda_core.weights import seed_parameters

    model_config = comfy.supported_models.Flux(UNET_CONFIG)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    seed_parameters(model.diffusion_model, SEED)
    return {k: v.detach().to(torch.float16).contiguous() for k, v in model.diffusion_model.state_dict().items()}


def metadata() -> dict[str, str]:
    return {
        "soda.model_family": "flux",
        "soda.unet_config": json.dumps(UNET_CONFIG, sort_keys=True),
        "soda.description": DESCRIPTION,
        "soda.format_version": "1",
    }


def serialize(state_dict: dict[str, Any]) -> bytes:
    """safetensors bytes with a canonical header.

    ``safetensors.torch.save`` writes ``__metadata__`` in hash-map order, which changes from run to run. The header
    is therefore rewritten: metadata keys sorted, tensor entries in data-offset order, compact JSON padded with
    spaces to a multiple of 8 bytes (as safetensors itself pads). Offsets are relative to the data section, so the
    tensor bytes are kept unchanged.
    """
    from safetensors.torch import save

    raw: bytes = save(state_dict, metadata=metadata())
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    meta = header.pop("__metadata__")
    canonical = {"__metadata__": dict(sorted(meta.items()))}
    canonical.update(sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]))
    encoded = json.dumps(canonical, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + raw[8 + header_len :]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy", help="ComfyUI tree (default: $COMFYUI_DIR or .runtime/comfyui-path)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output file (default: {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="only verify that --out equals a fresh build")
    args = parser.parse_args()

    import_comfy(Path(args.comfy).resolve() if args.comfy else comfyui_dir())
    register_pack()
    state_dict = build_state_dict()
    data = serialize(state_dict)
    # Build twice: the file must not depend on anything but the code (no time stamps, no hash-map order).
    if serialize(build_state_dict()) != data:
        print("error: two builds gave different bytes; the reference model is not deterministic", file=sys.stderr)
        return 1
    n_params = sum(t.numel() for t in state_dict.values())
    digest = hashlib.sha256(data).hexdigest()

    if args.check:
        ok = args.out.exists() and args.out.read_bytes() == data
        print(f"{args.out}: {'matches' if ok else 'DIFFERS FROM'} a fresh build (sha256 {digest})")
        return 0 if ok else 1
    if len(data) > MAX_BYTES:
        print(f"error: {len(data)} bytes is over the {MAX_BYTES}-byte budget", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(
        f"wrote {args.out}: {len(data):,} bytes, {len(state_dict)} tensors, {n_params:,} parameters, sha256 {digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
