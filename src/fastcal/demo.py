"""``fastcal demo``: simulate a small ALMA-like dataset with every corruption and calibrate it.

The simulator's truth plays the part of the ALMA calibrator catalogue (the flux calibrator's
model, as a delivered ``flux.csv`` would give it); everything else is derived from the data
by the recipe, then compared with the truth.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoResult", "run_demo"]


def _simulation_progress(progress: Any, cfg: Any) -> contextlib.AbstractContextManager:
    """A status line (and chunk bars) for the simulation when `progress` can draw them."""
    if not (hasattr(progress, "session") and hasattr(progress, "step")):
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(progress.session())
    stack.enter_context(progress.step("simulate", f"{cfg.n_ant} antennas, {cfg.n_spw} spws x "
                                                  f"{cfg.n_chan} channels, {cfg.n_cycles} cycles"))
    return stack


@dataclass
class DemoResult:
    """What the demo made and how the calibration compares with the injected truth."""

    ms: Path
    package: Path
    weblog: Path
    simulate_s: float
    pipeline_s: float
    summary: str
    stage_status: list[tuple[str, str, float]] = field(default_factory=list)
    lowest_qa: tuple[str, str, float, str] | None = None
    phasecal_flux: tuple[str, float, float, float] | None = None  # name, derived, error, truth
    sensitivity_ratio: list[float] = field(default_factory=list)  # achieved / theoretical


def run_demo(out_dir: str | Path, *, seed: int = 1, progress: Any = None,
             config: Any = None) -> DemoResult:
    """Simulate ``SimConfig.demo(seed)`` into `out_dir` and run the ALMA-style recipe on it.

    Parameters
    ----------
    out_dir : str or Path
        Directory for ``demo.ms`` (replaced if present) and the package ``pipeline/``.
    seed : int
        Simulator seed.
    progress : callable, optional
        Passed to :func:`fastcal.pipeline.run` (one call before and after each stage); a
        :class:`fastcal.pipeline.TerminalProgress` (``fastcal.pipeline.terminal_progress()``)
        also shows a status line and per-chunk bar for the simulation.
    config : fastcal.simulate.SimConfig, optional
        Dataset to simulate instead of ``SimConfig.demo(seed=seed)`` (e.g. ``SimConfig.tiny``
        for a quick check).

    Raises
    ------
    fastcal.pipeline.StageError
        A stage failed (the package in ``out_dir/pipeline`` records what ran).
    """
    from fastcal.ms import open_ms
    from fastcal.pipeline import run
    from fastcal.simulate import SimConfig, simulate

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ms = out / "demo.ms"
    cfg = config if config is not None else SimConfig.demo(seed=seed)
    t0 = time.perf_counter()
    with _simulation_progress(progress, cfg):
        truth = simulate(ms, config=cfg, overwrite=True)
    t_sim = time.perf_counter() - t0
    info = open_ms(ms)

    flux_id = truth.field_id("bandpass")
    catalogue = [{"field": truth.field_names[flux_id],
                  "fluxdensity": float(truth.field_flux_jy[flux_id]),
                  "spix": [float(truth.field_spix[flux_id])],
                  "reffreq": float(truth.flux_ref_freq_hz)}]
    t0 = time.perf_counter()
    result = run(ms, out / "pipeline", restart=True, options={"setjy_models": catalogue},
                 progress=progress)
    t_pipe = time.perf_counter() - t0

    ctx = result.context
    demo = DemoResult(ms=ms, package=Path(ctx.out_dir), weblog=Path(ctx.out_dir) / "qa" / "index.html",
                      simulate_s=t_sim, pipeline_s=t_pipe, summary=info.summary())
    demo.stage_status = [(r.stage, r.status, r.duration_s) for r in result.results]
    scores = [(r.stage, q.name, q.score, q.message) for r in result.results for q in r.qa]
    if scores:
        demo.lowest_qa = min(scores, key=lambda s: s[2])
    fluxes = ctx.results.get("fluxscale", {}).get("outputs", {}).get("fluxes", {})
    phase_id = truth.field_id("phase")
    phase_name = truth.field_names[phase_id]
    if phase_name in fluxes:
        f = fluxes[phase_name]
        true_jy = float(truth.model_flux(phase_id, f["ref_freq_hz"]))
        demo.phasecal_flux = (phase_name, f["flux_jy"], f["flux_err_jy"], true_jy)
    for q in ctx.results.get("qa", {}).get("qa", []):
        if q.get("name") == "sensitivity":
            demo.sensitivity_ratio.append(float(q["value"]))
    return demo
