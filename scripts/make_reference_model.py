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
import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
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


def comfyui_dir(explicit: str | None) -> Path:
    """The ComfyUI tree: --comfy, else $COMFYUI_DIR, else the one scripts/setup_env.sh recorded."""
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]).resolve()
    recorded = ROOT / ".runtime" / "comfyui-path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    return ROOT / ".runtime" / "ComfyUI"


def import_comfy(tree: Path) -> None:
    """Make ``import comfy`` work in this process on the CPU, the way ComfyUI's own scripts do."""
    if not (tree / "comfy").is_dir():
        sys.exit(f"No ComfyUI tree at {tree}: run `make setup`, or pass --comfy / set COMFYUI_DIR.")
    sys.path.insert(0, str(tree))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu)
    finally:
        sys.argv = saved_argv


def import_pack() -> None:
    """Register the repository as package ``comfyui_soda`` (its folder name is not importable)."""
    if "comfyui_soda" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "comfyui_soda", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_soda"] = module
    spec.loader.exec_module(module)


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

    import_comfy(comfyui_dir(args.comfy))
    import_pack()
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
