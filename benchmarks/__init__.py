"""Speed and fidelity benchmarks of SODA against full compute, fixed-interval caching, ComfyUI's EasyCache and
LazyCache, and MagCache-like and TeaCache-like step caches (``make bench``, i.e. ``python benchmarks/run.py``).

Modules: ``env`` (ComfyUI in-process, hardware facts), ``settings`` (models, conditioning, sweeps), ``methods``
(what is compared), ``peer_caches`` (the MagCache-like and TeaCache-like caches and their calibration), ``measure``
(one sampling run: wall time, per-step times, peak RSS, FLOPs, fidelity),
``harness`` (profile, plan, interleaved repeats), ``analysis`` (step-time vs FLOPs fit), ``report`` (JSON and
Markdown) and ``plots`` (PNG figures).
"""
