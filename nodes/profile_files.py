"""Profiles as files: ``soda_profiles`` model folder (the user's ``models/soda_profiles`` and the pack's
``profiles/``), ``.safetensors`` tensors plus JSON metadata (layout, sigmas, sampler, shapes, pack version)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from ..soda_core.profile import SensitivityProfile
from ..soda_core.validation import check_filename_prefix
from .inputs import SodaNode, checked, known
from .sockets import CATEGORY, SodaProfile


logger = logging.getLogger(__name__)

SODA_PROFILES = "soda_profiles"
SHIPPED_PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def register_profile_folders() -> None:
    """The user's ``models/soda_profiles`` first (where Save writes), then the profiles the pack ships."""
    if SODA_PROFILES not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[SODA_PROFILES] = ([], {".safetensors"})
    folder_paths.add_model_folder_path(SODA_PROFILES, os.path.join(folder_paths.models_dir, SODA_PROFILES))
    folder_paths.add_model_folder_path(SODA_PROFILES, str(SHIPPED_PROFILES))


register_profile_folders()


SAVE = "Save SODA Profile"
SAVE_FOLDER = "models/soda_profiles"


def save_profile(profile: SensitivityProfile, filename_prefix: str) -> str:
    """Write ``<models>/soda_profiles/<prefix>_00001_.safetensors`` (next free number); returns the file path."""
    from safetensors import SafetensorError

    check_filename_prefix(SAVE, filename_prefix, SAVE_FOLDER)
    root = folder_paths.get_folder_paths(SODA_PROFILES)[0]
    target = os.path.join(root, filename_prefix)
    try:
        full_folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, root)
        os.makedirs(full_folder, exist_ok=True)
        target = os.path.join(full_folder, f"{filename}_{counter:05}_.safetensors")  # ComfyUI's numbering
        profile.save(target)
    except (OSError, SafetensorError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ValueError(
            f"{SAVE}: cannot write {target} ({reason}). Fix: choose another filename_prefix, or make {root} "
            "writable and free some space."
        ) from None
    logger.info("SODA: saved profile to %s", target)
    return target


class SODASaveProfile(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODASaveProfile",
            display_name="Save SODA Profile",
            category=CATEGORY,
            description="Saves a sensitivity profile to models/soda_profiles, so it can be planned from again, "
            "shared, and loaded with Load SODA Profile without profiling again.",
            inputs=[
                SodaProfile.Input("profile", tooltip="From Profile Sensitivity."),
                io.String.Input(
                    "filename_prefix",
                    default="soda/profile",
                    tooltip="File name under models/soda_profiles (sub/folders allowed, no '..' or absolute "
                    "paths); a number is appended. Name it after the model, sampler and step count, e.g. "
                    "flux-dev_euler_20.",
                ),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the profile was written.")],
            is_output_node=True,
        )

    @classmethod
    def check(cls, values) -> None:
        if known(values, "filename_prefix"):
            check_filename_prefix(SAVE, values["filename_prefix"], SAVE_FOLDER)

    @classmethod
    @checked
    def execute(cls, profile: SensitivityProfile, filename_prefix: str) -> io.NodeOutput:
        path = save_profile(profile, filename_prefix)
        return io.NodeOutput(path, ui={"text": [f"Saved SODA profile: {path}"]})


class SODALoadProfile(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODALoadProfile",
            display_name="Load SODA Profile",
            category=CATEGORY,
            description="Loads a saved sensitivity profile (models/soda_profiles or the profiles shipped with the "
            "pack). Plan SODA Schedule maps it onto other step counts or samplers by sigma; SODA Model Patch "
            "refuses it for a model with a different block layout.",
            inputs=[
                io.Combo.Input(
                    "profile_name",
                    options=folder_paths.get_filename_list(SODA_PROFILES),
                    tooltip="A .safetensors profile written by Save SODA Profile.",
                ),
            ],
            outputs=[SodaProfile.Output(display_name="profile", tooltip="The loaded profile.")],
        )

    @classmethod
    def execute(cls, profile_name: str) -> io.NodeOutput:
        """A missing file, and every defect of a file (``SensitivityProfile.load``), is one ValueError naming it."""
        path = folder_paths.get_full_path(SODA_PROFILES, profile_name)
        if path is None:
            raise ValueError(
                f"SODA profile {profile_name!r} was not found in {folder_paths.get_folder_paths(SODA_PROFILES)}. "
                "Refresh the node list or save a profile with Save SODA Profile first."
            )
        return io.NodeOutput(SensitivityProfile.load(path))

    @classmethod
    def fingerprint_inputs(cls, profile_name: str) -> float:
        path = folder_paths.get_full_path(SODA_PROFILES, profile_name)
        return os.path.getmtime(path) if path else float("nan")


NODES: list[type[io.ComfyNode]] = [SODASaveProfile, SODALoadProfile]
