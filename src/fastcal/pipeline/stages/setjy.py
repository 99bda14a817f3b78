"""setjy: calibrator flux models (hif_setmodels, reference section 8 stage 11).

Models are stored as fastcal virtual models (:func:`fastcal.flux.setjy`), from, in order:

* option ``flux_csv``: an ALMA ``flux.csv`` (:func:`fastcal.flux.setjy_from_csv`); the file
  is copied to ``calibration/flux_catalogue.csv`` of the package (the fluxscale stage writes
  the derived fluxes to ``calibration/flux.csv``);
* option ``setjy_models``: a list of ``{"field": name, "fluxdensity": I or [I,Q,U,V],
  "spix": [alpha, ...], "reffreq": "233GHz"}`` (CLI ``--setjy FIELD:I[:spix[:reffreq]]``).

Without either, the flux calibrator keeps the default 1 Jy model: the stage says so and
scores red, since the absolute flux scale is then unknown (fastcal has no calibrator
catalogue; the ALMA pipeline queries one in importdata). Solar-system models
(Butler-JPL-Horizons) are not implemented.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from fastcal.errors import ParameterError
from fastcal.pipeline.context import Context
from fastcal.pipeline.qa import QAScore
from fastcal.pipeline.stage import OK, Stage, StageResult

__all__ = ["SetjyStage", "parse_setjy_option"]

logger = logging.getLogger(__name__)


def parse_setjy_option(text: str) -> dict[str, Any]:
    """``"FIELD:I[:spix[:reffreq]]"`` -> a ``setjy_models`` entry.

    Raises
    ------
    ParameterError
        Malformed text (the message shows the expected form).
    """
    parts = [p.strip() for p in str(text).split(":")]
    if not 2 <= len(parts) <= 4 or not parts[0]:
        raise ParameterError(f"--setjy {text!r} is invalid; valid: FIELD:I[:spix[:reffreq]], "
                             f"e.g. J1924-2914:3.1:-0.6:233GHz")
    try:
        entry: dict[str, Any] = {"field": parts[0], "fluxdensity": float(parts[1])}
        if len(parts) > 2 and parts[2]:
            entry["spix"] = [float(parts[2])]
    except ValueError as exc:
        raise ParameterError(f"--setjy {text!r}: I and spix must be numbers (Jy, unitless)") from exc
    if len(parts) > 3 and parts[3]:
        entry["reffreq"] = parts[3]
    return entry


class SetjyStage(Stage):
    """Set the calibrator models (flux.csv or manual options)."""

    name = "setjy"
    title = "calibrator flux models"

    def run(self, ctx: Context) -> StageResult:
        from fastcal.flux import setjy, setjy_from_csv

        csv_path = ctx.options.get("flux_csv")
        models = ctx.options.get("setjy_models") or []
        done: list[str] = []
        outputs: dict[str, Any] = {}
        if csv_path:
            csv_path = os.path.abspath(str(csv_path))
            res = ctx.call(setjy_from_csv, vis=ctx.vis, path=csv_path)
            done += [ctx.info.fields[f].name for f in res]
            dst = ctx.path("calibration", "flux_catalogue.csv")
            if os.path.abspath(dst) != csv_path:
                shutil.copyfile(csv_path, dst)
            outputs["flux_csv"] = dst
        for m in models:
            if not isinstance(m, dict) or "field" not in m or "fluxdensity" not in m:
                raise ParameterError(f"setjy_models entry {m!r} is invalid; valid: a dict with field, "
                                     f"fluxdensity and optionally spix, reffreq")
            kw = dict(vis=ctx.vis, field=str(m["field"]), fluxdensity=m["fluxdensity"],
                      spix=list(m.get("spix", [])), standard="manual")
            if "reffreq" in m:
                kw["reffreq"] = m["reffreq"]
            else:  # CASA's default 1GHz is meaningless for ALMA: use the first science spw centre
                kw["reffreq"] = float(ctx.info.spws[ctx.science_spws[0]].centre_freq)
            ctx.call(setjy, **kw)
            done.append(str(m["field"]))
        outputs["fields"] = sorted(set(done))
        flux = ctx.roles.get("flux", [])
        missing = [f for f in flux if f not in done]
        if missing:
            msg = (f"no flux model for the flux calibrator(s) {', '.join(missing)} (give --flux-csv or "
                   f"--setjy FIELD:I[:spix[:reffreq]]): they keep the 1 Jy default, the absolute flux "
                   f"scale is unknown")
            logger.warning("%s", msg)
            qa = QAScore("flux_models", float(len(done)), 0.2, msg, "fields")
        else:
            msg = f"models set for {', '.join(outputs['fields'])}"
            qa = QAScore("flux_models", float(len(done)), 1.0, msg, "fields")
        return StageResult(self.name, OK, inputs=dict(flux_csv=csv_path or "", setjy_models=models),
                           outputs=outputs, qa=[qa], messages=[msg])
