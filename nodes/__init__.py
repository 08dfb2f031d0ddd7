"""ComfyUI glue: the SODA nodes (V3 schema). Each module lists its node classes in ``NODES``."""

from comfy_api.latest import ComfyExtension, io

from . import accelerate, fidelity, profile_files, reference_model, soda


NODE_MODULES = (accelerate, soda, profile_files, reference_model, fidelity)


class SodaExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in NODE_MODULES for node in module.NODES]
