"""The ALMA-style calibration recipe: the ordered stage list.

Stages marked *placeholder* are not implemented in this version: they run as
:class:`~fastcal.pipeline.stage.PlaceholderStage`, which records status ``not_implemented``
and says so, so a run never pretends to have calibrated. docs/pipeline.md lists the plan.
"""

from __future__ import annotations

import logging

from fastcal.pipeline.context import CalEntry, Context
from fastcal.pipeline.stage import OK, SKIPPED, LoopStage, Stage, StageResult
from fastcal.pipeline.stages.applycal import ApplycalStage
from fastcal.pipeline.stages.bandpass import BandpassStage
from fastcal.pipeline.stages.calflag import CorrectedAmpFlagStage, ReapplyStage, RederiveStage
from fastcal.pipeline.stages.flagdata import FlagDataStage
from fastcal.pipeline.stages.fluxcalflag import FluxcalflagStage
from fastcal.pipeline.stages.fluxscale import FluxscaleStage
from fastcal.pipeline.stages.gfluxscaleflag import GfluxscaleflagStage
from fastcal.pipeline.stages.importdata import ImportDataStage
from fastcal.pipeline.stages.lowgainflag import LowgainflagStage
from fastcal.pipeline.stages.qa2 import QA2Stage
from fastcal.pipeline.stages.rawflagchans import RawflagchansStage
from fastcal.pipeline.stages.refant import RefantStage
from fastcal.pipeline.stages.setjy import SetjyStage
from fastcal.pipeline.stages.spwphaseup import SpwphaseupStage
from fastcal.pipeline.stages.timegaincal import TimegaincalStage
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
    return [
        ImportDataStage(),
        AntposStage(),
        FlagDataStage(),
        FluxcalflagStage(),
        RawflagchansStage(),
        RefantStage(),
        TsysStage(),
        WvrStage(),
        LowgainflagStage(),
        SetjyStage(),
        BandpassStage(),
        SpwphaseupStage(),
        GfluxscaleflagStage(),
        FluxscaleStage(),
        TimegaincalStage(),
        ApplycalStage(),
        LoopStage("calflag", "flag calibrator outliers, re-derive and re-apply until no new flags",
                  [CorrectedAmpFlagStage(), RederiveStage(), ReapplyStage()], max_rounds=3),
        QA2Stage(),
        ExportDataStage(),
    ]


def stage_names() -> list[str]:
    """Names of the recipe's stages, in order."""
    return [s.name for s in alma_recipe()]
