"""The benchmark's MagCache-like and TeaCache-like caches (``benchmarks.peer_caches``) on the trained reference model
the benchmark uses: threshold 0 is full compute bit for bit; a calibrated threshold skips steps with a bounded error
and saves the FLOPs of the skipped steps (FlopCounterMode and a count of the model calls that ran); the patched clone
leaves the original model alone and no run state behind, also when a run fails midway."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch


pytestmark = pytest.mark.integration

STEPS = 8
LABELS = (0, 3, 7, 9)
COUNT_KEY = "test_count"


@pytest.fixture(scope="module")
def bench(comfy):
    from benchmarks import peer_caches
    from benchmarks.measure import Context, _sample, count_flops
    from benchmarks.settings import REFERENCE_MODEL, SETTINGS
    from comfyui_soda.nodes.reference_model import encode_captions, load_reference_model

    model = load_reference_model(REFERENCE_MODEL)
    config, classes = model.model.model_config.unet_config, model.model.soda_classes
    widths = config["context_in_dim"], config["vec_in_dim"]
    positive = encode_captions([classes[c] for c in LABELS], *widths)
    negative = encode_captions([""] * len(LABELS), *widths)
    setting = dataclasses.replace(SETTINGS["quick-reference"], latent_shape=(len(LABELS), 16, 16, 16), repeats=1)
    ctx = Context.create(model, setting, STEPS, positive, negative)
    full_flops, full = count_flops(model, ctx)
    calibrated: dict[str, torch.Tensor] = {}

    def calibration_run(clone):
        calibrated["latent"] = _sample(clone, dataclasses.replace(ctx, seeds=[10_000]), None)

    calibration = peer_caches.calibrate(model, calibration_run)
    reference = _sample(model, dataclasses.replace(ctx, seeds=[10_000]), None)
    return {
        "model": model,
        "ctx": ctx,
        "full": full,
        "full_flops": full_flops,
        "calibration": calibration,
        "calibration_bit_exact": torch.equal(calibrated["latent"], reference),
        "sample": _sample,
        "count_flops": count_flops,
    }


def _config(bench, technique: str, threshold: float):
    from benchmarks import peer_cache_rules

    cal = bench["calibration"]
    if technique == "magcache":
        return peer_cache_rules.MagCacheConfig(threshold, cal.mag_ratios)
    return peer_cache_rules.TeaCacheConfig(threshold, cal.coefficients)


def _patched(bench, technique: str, threshold: float):
    from benchmarks import peer_caches

    config = _config(bench, technique, threshold)
    apply = peer_caches.apply_magcache if technique == "magcache" else peer_caches.apply_teacache
    return apply(bench["model"], config)


def _threshold_for_2x(bench, technique: str) -> tuple[float, int]:
    from benchmarks import peer_cache_rules

    cal = bench["calibration"]
    rule = peer_cache_rules.MagCacheRule if technique == "magcache" else peer_cache_rules.TeaCacheRule
    return peer_cache_rules.threshold_for(
        lambda t: sum(peer_cache_rules.simulate(rule(_config(bench, technique, t), STEPS), cal.distances)), STEPS, 2.0
    )


class _Calls:
    """An innermost DIFFUSION_MODEL wrapper on a clone: the model calls that ran to the end, and the run state
    the peer cache put in transformer_options (kept to check it is emptied after the run)."""

    def __init__(self) -> None:
        self.ran = 0
        self.states: list = []

    def wrapper(self, executor, *args, **kwargs):
        from benchmarks import peer_caches

        options = args[-1]
        for key in (peer_caches.MAGCACHE_KEY, peer_caches.TEACACHE_KEY):
            state = options.get(key + peer_caches.RUN_SUFFIX)
            if state is not None and all(state is not s for s in self.states):
                self.states.append(state)
        out = executor(*args, **kwargs)
        self.ran += 1
        return out


def _counted(patched):
    import comfy.patcher_extension

    calls = _Calls()
    clone = patched.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, COUNT_KEY, calls.wrapper)
    return clone, calls


class _SkipLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if " - skipped " in record.getMessage():
            self.lines.append(record.getMessage())


@pytest.fixture
def skip_lines():
    handler = _SkipLines()
    logging.getLogger().addHandler(handler)
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    yield handler.lines
    logging.getLogger().setLevel(previous)
    logging.getLogger().removeHandler(handler)


def test_calibration_is_a_full_compute_run(bench):
    cal = bench["calibration"]
    assert bench["calibration_bit_exact"]
    assert cal.steps == STEPS and len(cal.mag_ratios) == STEPS and cal.mag_ratios[0] == 1.0
    assert len(cal.distances) == len(cal.changes) == STEPS - 1
    assert all(0.0 < r < 10.0 for r in cal.mag_ratios) and all(d > 0.0 for d in cal.distances)
    assert 2 <= len(cal.coefficients) <= 5 and all(map(torch.isfinite, torch.tensor(cal.coefficients)))


@pytest.mark.parametrize("technique", ["magcache", "teacache"])
def test_threshold_zero_is_full_compute_bit_for_bit(bench, technique, skip_lines):
    clone, calls = _counted(_patched(bench, technique, 0.0))
    latent = bench["sample"](clone, bench["ctx"], None)
    assert torch.equal(latent, bench["full"])
    assert calls.ran == STEPS
    assert skip_lines and skip_lines[-1].split(" - skipped ")[1].startswith(f"0/{STEPS} ")


@pytest.mark.parametrize("technique", ["magcache", "teacache"])
def test_a_calibrated_threshold_skips_steps_and_saves_their_flops(bench, technique, skip_lines):
    threshold, predicted = _threshold_for_2x(bench, technique)
    assert predicted < STEPS
    clone, calls = _counted(_patched(bench, technique, threshold))
    flops, latent = bench["count_flops"](clone, bench["ctx"])
    computed = calls.ran
    skipped = int(skip_lines[-1].split(" - skipped ")[1].split("/")[0])
    assert 0 < skipped == STEPS - computed
    assert abs(computed - predicted) <= 1  # the run's own decisions, close to the calibration's
    assert torch.isfinite(latent).all()
    rel_l2 = float((latent - bench["full"]).norm() / bench["full"].norm())
    assert 0.0 < rel_l2 < 0.25, rel_l2
    step = bench["full_flops"] / STEPS
    if technique == "magcache":  # decides from the calibration alone: a skipped step costs nothing
        assert flops == pytest.approx(computed * step, rel=1e-9)
    else:  # a skipped step still embeds the inputs and modulates block 0's input to decide: counted, and small
        assert computed * step < flops < computed * step + skipped * 0.25 * step


@pytest.mark.parametrize("technique", ["magcache", "teacache"])
def test_the_patched_clone_leaves_the_model_and_no_state_behind(bench, technique):
    from benchmarks import peer_caches

    model = bench["model"]
    before_options = repr(model.model_options)
    before_wrappers = repr(model.wrappers)
    threshold, _ = _threshold_for_2x(bench, technique)
    patched = _patched(bench, technique, threshold)
    key = peer_caches.MAGCACHE_KEY if technique == "magcache" else peer_caches.TEACACHE_KEY
    config = patched.model_options["transformer_options"][key]
    clone, calls = _counted(patched)
    first = bench["sample"](clone, bench["ctx"], None)

    stop_at = 3

    def fail(step, x0, x, total):
        if step == stop_at:
            raise RuntimeError("stopped mid-run by the test")

    with pytest.raises(RuntimeError, match="stopped mid-run"):
        bench["sample"](clone, bench["ctx"], fail)
    again = bench["sample"](clone, bench["ctx"], None)

    assert torch.equal(first, again)  # nothing of the failed run leaked into the next one
    assert len(calls.states) == 3  # a fresh state per run
    for state in calls.states:
        assert state.residuals == {} and state.previous is None and state.block is None
        assert state.skipped == 0 and state.step == -1 and not state.skip and not state.deciding
    options = patched.model_options["transformer_options"]
    assert options[key] == config and key + peer_caches.RUN_SUFFIX not in options
    assert repr(model.model_options) == before_options and repr(model.wrappers) == before_wrappers
    assert key not in model.model_options.get("transformer_options", {})
    assert torch.equal(bench["sample"](model, bench["ctx"], None), bench["full"])
