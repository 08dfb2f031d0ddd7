"""Speed and fidelity benchmarks of SODA against full compute, fixed-interval caching and ComfyUI's EasyCache and
LazyCache (``make bench``, i.e. ``python benchmarks/run.py``).

Modules: ``env`` (ComfyUI in-process, hardware facts), ``settings`` (models, conditioning, sweeps), ``methods``
(what is compared), ``measure`` (one sampling run: wall time, per-step times, peak RSS, FLOPs, fidelity),
``harness`` (profile, plan, interleaved repeats), ``analysis`` (step-time vs FLOPs fit), ``report`` (JSON and
Markdown) and ``plots`` (PNG figures).
"""
