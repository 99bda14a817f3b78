"""The ALMA-style calibration recipe: the ordered stage list.

Stages marked *placeholder* are not implemented in this version: they run as
:class:`~fastcal.pipeline.stage.PlaceholderStage`, which records status ``not_implemented``
and says so, so a run never pretends to have calibrated. docs/pipeline.md lists the plan.
"""

from __future__ import annotations

import logging

from fastcal.pipeline.context import CalEntry, Context
from fastcal.pipeline.stage import OK, SKIPPED, LoopStage, PlaceholderStage, Stage, StageResult
from fastcal.pipeline.stages.bandpass import BandpassStage
from fastcal.pipeline.stages.flagdata import FlagDataStage
from fastcal.pipeline.stages.importdata import ImportDataStage
from fastcal.pipeline.stages.refant import RefantStage
from fastcal.pipeline.stages.setjy import SetjyStage
from fastcal.pipeline.stages.tsys import TsysStage
from fastcal.pipeline.stages.wvr import WvrStage

__all__ = ["AntposStage", "ExportDataStage", "alma_recipe", "stage_names"]

logger = logging.getLogger(__name__)


class AntposStage(Stage):
    """Antenna-position corrections (gencal antpos) from the ``antpos_file`` option."""

    name = "antpos"
    title = "antenna position corrections"

    def run(self, ctx: Context) -> StageResult:
        path = ctx.options.get("antpos_file")
        if not path:
            return StageResult(self.name, SKIPPED, messages=[
                "no antenna-position corrections given (option antpos_file / --antpos FILE)"])
        from fastcal.antpos import antpos_table

        table = ctx.path("calibration", f"{ctx.vis_name}.antpos.tbl")
        params = dict(vis=ctx.vis, caltable=table, file=str(path), overwrite=True)
        ctx.call(antpos_table, **params)
        ctx.callib.add(CalEntry("antpos", table, self.name, interp="", calwt=False))
        return StageResult(self.name, OK, inputs={"file": str(path)}, outputs={"caltable": table})


class ExportDataStage(Stage):
    """Write the delivery package (README, calibration/, qa/, log/, script/)."""

    name = "exportdata"
    title = "delivery package"

    def run(self, ctx: Context) -> StageResult:
        from fastcal.pipeline.package import write_package

        report = write_package(ctx)
        return StageResult(self.name, OK, outputs=report, messages=report.get("notes", []))


def alma_recipe() -> list[Stage]:
    """The stages of ``fastcal pipeline`` in order (fresh instances)."""
    P = PlaceholderStage
    return [
        ImportDataStage(),
        AntposStage(),
        FlagDataStage(),
        RefantStage(),
        TsysStage(),
        WvrStage(),
        P("lowgainflag", "flag antennas with gain amplitudes outside 0.5..1.5 x median",
          "fastcal.solve + fastcal.apply"),
        SetjyStage(),
        BandpassStage(),
        P("fluxscale", "amplitude solve on calibrators, bootstrapped fluxes, flux.csv",
          "fastcal.solve + fastcal.fluxscale"),
        P("timegaincal", "phase 'int' on calibrators, per-scan phase for the target, per-scan amplitude",
          "fastcal.solve"),
        P("applycal", "apply the calibration library (calwt), flag backup", "fastcal.apply"),
        LoopStage("calflag", "flag calibrator outliers, re-derive and re-apply until no new flags", [
            P("correctedampflag", "corrected-amplitude outlier flagging of the calibrators "
                                  "(antennas, scans, integrations, channels)", "calibrated calibrators"),
            P("rederive", "re-solve bandpass, fluxscale and gains with the new flags", "fastcal.solve"),
            P("reapply", "re-apply the cal library", "fastcal.apply"),
        ], max_rounds=3),
        P("qa", "QA2 checks: Tsys, WVR, flux scale, bandpass, phase transfer, gain noise, "
                "sensitivity vs radiometer equation", "calibrated data"),
        ExportDataStage(),
    ]


def stage_names() -> list[str]:
    """Names of the recipe's stages, in order."""
    return [s.name for s in alma_recipe()]
