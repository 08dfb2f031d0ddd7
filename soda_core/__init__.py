"""soda_core: the framework-free SODA engine (torch only; never imports comfy)."""
