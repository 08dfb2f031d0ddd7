"""comfyui-soda: SODA (Sensitivity-Oriented Dynamic Acceleration) for Diffusion Transformers in ComfyUI.

ComfyUI loads this file as a custom node package and calls :func:`comfy_entrypoint` (V3 node API). The node modules
are imported only there, so importing this package (tests, scripts) never imports ComfyUI, and a problem while
loading the nodes is logged with its cause instead of breaking ComfyUI's start-up.
"""

import logging


logger = logging.getLogger(__name__)

__version__ = "0.1.0"


async def comfy_entrypoint():  # type: ignore[no-untyped-def]
    from comfy_api.latest import ComfyExtension

    try:
        from .nodes import SodaExtension
    except Exception as error:  # noqa: BLE001 - any import failure must be reported, not crash ComfyUI
        logger.error(
            "comfyui-soda: the SODA nodes could not be loaded (%s: %s). ComfyUI keeps running without them. "
            "Fix: install the pack's requirements into ComfyUI's Python (`pip install -r requirements.txt` in %s) "
            "and use ComfyUI 0.3.75 or newer.",
            type(error).__name__,
            error,
            __path__[0],
            exc_info=True,
        )

        class _NoNodes(ComfyExtension):
            async def get_node_list(self):  # type: ignore[no-untyped-def]
                return []

        return _NoNodes()
    return SodaExtension()
