"""fluxscale: bootstrap the phase (and check) calibrator fluxes from the flux calibrator
(hifa_gfluxscale, reference sections 7.3-7.4 and 8 stage 16), simplified.

1. Phase solve ``calmode='p'``, ``solint='int'``, ``minsnr=2`` on the flux and transfer
   calibrators, with the prior tables (antpos, Tsys, WVR), the bandpass and (when spwphaseup
   registered it) the spw phase-offset table pre-applied, following the spwphaseup mapping
   of the phase calibrator (:func:`~fastcal.pipeline.stages.spwphaseup.phase_plan`:
   ``spwmap``, or ``combine='spw'``/``gaintype='T'``/``interp='linearPD'``);
2. amplitude solve ``calmode='a'``, ``solint='inf'`` per scan, ``minsnr=2``, with the phases
   pre-applied (with that mapping); the flux calibrator is solved against its setjy model,
   the others against 1 Jy;
3. :func:`fastcal.fluxscale.fluxscale` (reference = flux fields, transfer = phase and check
   fields, and the bandpass calibrator when it is not the flux calibrator), with the
   ``refspwmap`` of the fluxcalflag stage when it maps spws (spws of a solar-system flux
   calibrator mostly covered by lines take the reference amplitudes of another spw; not
   passed when it is ``[-1]``/empty or fluxcalflag did not run);
4. the derived fluxes (fitted I at the fit reference frequency and spectral index) are set as
   setjy models of the transfer fields, so later amplitude solves are in Jy; ``flux.csv`` is
   written to ``calibration/``. The fluxscale table itself is not applied (as in the pipeline).

QA: per transfer field, :func:`~fastcal.pipeline.qa.flux_deviation_score` against the
catalogue flux when the options give one (``setjy_models`` or ``flux_csv``). Outliers of these
calibrators are flagged before, by the ``gfluxscaleflag`` stage
(:mod:`fastcal.pipeline.stages.gfluxscaleflag`) when the recipe has it. Not in this version:
resolved-calibrator uv limits.
"""

from __future__ import annotations

import logging

import numpy as np

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore, flux_deviation_score
from fastcal.pipeline.stage import OK, SKIPPED, PlotSpec, Stage, StageResult
from fastcal.pipeline.stages.spwphaseup import (
    calibrator_prior,
    phase_plan,
    solve_phase,
)

__all__ = ["FluxscaleStage", "catalogue_flux", "fluxcal_refspwmap"]

logger = logging.getLogger(__name__)


def catalogue_flux(ctx: Context, field: str, freq_hz: float) -> float | None:
    """Catalogue Stokes I (Jy) of `field` at `freq_hz` from the stage options, or None."""
    for m in ctx.options.get("setjy_models") or []:
        if m.get("field") == field:
            from fastcal.flux import parse_frequency, spectral_factor

            fd = m["fluxdensity"]
            i0 = float(fd[0] if isinstance(fd, (list, tuple)) else fd)
            ref = m.get("reffreq")
            if ref is None:
                return None
            return float(i0 * spectral_factor(np.array([freq_hz]), parse_frequency(ref), m.get("spix", []))[0])
    path = ctx.options.get("flux_csv")
    if path:
        from fastcal.flux import read_flux_csv

        names = list(ctx.info.field_names)
        vals = [e for e in read_flux_csv(path)
                if e.field == field or (e.field.isdigit() and int(e.field) < len(names)
                                        and names[int(e.field)] == field)]
        if vals:  # the entry whose spw is nearest in frequency, extrapolated with its spix
            spws = ctx.info.spws
            e = min(vals, key=lambda v: abs(spws[v.spw].centre_freq - freq_hz))
            return float(e.stokes[0] * (freq_hz / spws[e.spw].centre_freq) ** e.spix)
    return None


def fluxcal_refspwmap(ctx: Context) -> list[int] | None:
    """The fluxcalflag stage's ``refspwmap`` when it maps spws, else None (stage not run, or
    ``[-1]``/empty: fluxscale then uses each spw's own reference amplitudes).

    Raises
    ------
    ParameterError
        A stored map that is not a list of spw ids >= 0.
    """
    res = ctx.results.get("fluxcalflag") or {}
    if res.get("status") != OK:
        return None
    m = (res.get("outputs") or {}).get("refspwmap")
    if not m or list(m) == [-1]:
        return None
    if not isinstance(m, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                    for v in m):
        raise ParameterError(f"fluxcalflag refspwmap {m!r} is invalid; valid: [-1] or a list of spw ids >= 0; "
                             f"run fluxcalflag again")
    return [int(v) for v in m]


class FluxscaleStage(Stage):
    """Flux bootstrapping onto the phase/check calibrators (simplified, see the module)."""

    name = "fluxscale"
    title = "flux bootstrapping (gfluxscale)"
    simplified = True

    def run(self, ctx: Context) -> StageResult:
        from fastcal.flux import setjy, write_flux_csv
        from fastcal.fluxscale import fluxscale
        from fastcal.solve import solve_gains

        ref = ctx.roles.get("flux", [])
        transfer = [f for r in ("phase", "check", "bandpass") for f in ctx.roles.get(r, []) if f not in ref]
        transfer = list(dict.fromkeys(transfer))
        if not ref:
            raise ParameterError("no flux calibrator in the context; run importdata first")
        if not transfer:
            return StageResult(self.name, SKIPPED, messages=["no transfer calibrator: nothing to bootstrap"])
        prior = calibrator_prior(ctx, self.name)
        pre = ctx.preapply(*prior)
        plan = phase_plan(ctx)
        refspwmap = fluxcal_refspwmap(ctx)
        fields = ",".join(ref + transfer)
        spw = ",".join(map(str, ctx.science_spws))
        refant = ",".join(ctx.refant)
        ph = ctx.path("working", f"{ctx.vis_name}.fluxphase.tbl")
        amp = ctx.path("working", f"{ctx.vis_name}.fluxamp.tbl")
        ftab = ctx.path("working", f"{ctx.vis_name}.fluxscale.tbl")
        common = dict(vis=ctx.vis, field=fields, spw=spw, refant=refant, minblperant=4, minsnr=2.0,
                      overwrite=True)
        solve_phase(ctx, plan, ph, field=fields, solint="int", minsnr=2.0, pre=pre)
        ctx.call(solve_gains, caltable=amp, solint="inf", calmode="a", **common,
                 gaintable=pre["gaintable"] + [ph], gainfield=pre["gainfield"] + [""],
                 interp=pre["interp"] + [plan.interp], spwmap=pre["spwmap"] + [list(plan.spwmap)])
        extra = dict(refspwmap=refspwmap) if refspwmap else {}
        res = ctx.call(fluxscale, caltable=amp, reference=",".join(ref), transfer=",".join(transfer),
                       vis=ctx.vis, fluxtable=ftab, overwrite=True, **extra)
        csv_path = ctx.path("calibration", "flux.csv")
        write_flux_csv(csv_path, res, ms=ctx.vis_name, vis=ctx.vis, overwrite=True)
        qa: list[QAScore] = []
        fluxes = {}
        msgs = []
        for _fid, ff in sorted(res.fluxes.items()):
            alpha = float(ff.alpha) if np.isfinite(ff.alpha) else 0.0
            ctx.call(setjy, vis=ctx.vis, field=ff.field_name, fluxdensity=float(ff.fit_fluxd),
                     spix=[alpha], reffreq=float(ff.fit_ref_freq_hz), standard="manual")
            fluxes[ff.field_name] = dict(
                flux_jy=float(ff.fit_fluxd), flux_err_jy=float(ff.fit_fluxd_err), spix=alpha,
                ref_freq_hz=float(ff.fit_ref_freq_hz),
                per_spw={str(s): float(v.flux_i) for s, v in sorted(ff.spws.items())},
                per_spw_err={str(s): float(v.fluxd_err[0]) for s, v in sorted(ff.spws.items())})
            msgs.append(f"{ff.field_name}: {ff.fit_fluxd:.4g} +- {ff.fit_fluxd_err:.2g} Jy at "
                        f"{ff.fit_ref_freq_hz / 1e9:.3f} GHz, spix {alpha:.2f}")
            cat = catalogue_flux(ctx, ff.field_name, float(ff.fit_ref_freq_hz))
            if cat:
                qa.append(flux_deviation_score(float(ff.fit_fluxd), cat, ff.field_name))
        missing = [f for f in transfer if f not in fluxes]
        if missing:
            msgs.append(f"no flux derived for {', '.join(missing)}")
            qa.append(QAScore("flux_missing", float(len(missing)), 0.2,
                              f"no flux derived for {', '.join(missing)}", "fields"))
        ran = ctx.results.get("gfluxscaleflag", {}).get("status") == OK
        msgs.append(f"phase solutions: {plan.describe()}")
        if refspwmap:
            msgs.append(f"refspwmap {refspwmap} from fluxcalflag (spws mostly in lines of the flux calibrator)")
        msgs.append("simplified: no resolved-source uv limits"
                    + ("" if ran else ", no gfluxscaleflag (stage not in the recipe)"))
        return StageResult(self.name, OK, inputs=dict(reference=ref, transfer=transfer, prior_tables=prior,
                                                      refspwmap=refspwmap or [-1]),
                           outputs=dict(fluxes=fluxes, flux_csv=csv_path, amp_table=amp),
                           qa=qa, messages=msgs,
                           plots=[PlotSpec("flux_spectrum", f"Derived flux of {name}",
                                           {"freq_hz": [float(res.freq_hz[int(s)]) for s in f["per_spw"]],
                                            "flux_jy": list(f["per_spw"].values()),
                                            "flux_err_jy": list(f["per_spw_err"].values()),
                                            "field_name": name,
                                            "fit_flux_jy": f["flux_jy"], "fit_ref_freq_hz": f["ref_freq_hz"],
                                            "spix": f["spix"]})
                                  for name, f in fluxes.items()])
