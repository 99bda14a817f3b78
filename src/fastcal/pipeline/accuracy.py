"""End-to-end accuracy of a pipeline run on simulated data (issue 8, section 5).

Compares the calibrated data (CORRECTED_DATA) of a simulated MS with the simulator's truth
(:func:`fastcal.simulate.load_truth`):

* :func:`field_flux_ratio`: the weighted vector average of CORRECTED_DATA / true model over
  every unflagged parallel-hand visibility of a field, per science spw, plus the rms of the
  per-row residual phase and the part of it the thermal noise explains;
* :func:`transfer_prediction`: what phase transfer from the phase calibrator can achieve at
  best, from the truth: the residual phase of every target visibility when the per-scan
  phase-calibrator solutions (vector means over each scan) are linearly interpolated to the
  target, for the path the WVRs do not see (``dry_path``) and the gains. Its coherence
  ``|<exp(i r)>|`` is the amplitude the vector average of a perfectly calibrated point source
  keeps (about ``exp(-sigma_r^2 / 2)``): physical decorrelation, not a calibration error.

These are diagnostics for tests and for docs/pipeline.md; they read the MS with
python-casacore and are not part of the recipe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["FluxRatio", "TransferPrediction", "field_flux_ratio", "transfer_prediction"]

logger = logging.getLogger(__name__)

_C = 299792458.0


@dataclass
class FluxRatio:
    """Calibrated vs true flux of one field in one spw.

    Attributes
    ----------
    spw : int
        SPECTRAL_WINDOW id.
    ratio : float
        ``|sum w V / S| / sum w`` over unflagged parallel-hand channels (weights WEIGHT).
    phase_rms_deg : float
        Rms over rows of the phase of each row's channel- and pol-averaged V / S (deg).
    noise_phase_deg : float
        Rms phase the thermal noise alone gives those row averages (deg), from the
        channel-to-channel scatter of each row (sigma of the mean / |mean|).
    """

    spw: int
    ratio: float
    phase_rms_deg: float
    noise_phase_deg: float


@dataclass
class TransferPrediction:
    """Best achievable phase transfer to the target from the truth (one science spw).

    Attributes
    ----------
    coherence : float
        ``|mean exp(i r)|`` over target baselines, integrations and pols X, Y.
    rms_deg : float
        Rms of the residual phase r (deg).
    """

    coherence: float
    rms_deg: float


def field_flux_ratio(vis: str, truth, field_id: int, column: str = "CORRECTED_DATA") -> list[FluxRatio]:
    """Vector-averaged calibrated / true flux of a field, per science spw.

    Parameters
    ----------
    vis : str
        Measurement Set written by :func:`fastcal.simulate.simulate` and calibrated.
    truth : fastcal.simulate.Truth
        Its truth.
    field_id : int
        FIELD_ID.
    column : str
        Data column.

    Returns
    -------
    list of FluxRatio
        One per science spw with unflagged data.
    """
    from casacore.tables import table

    with table(f"{vis}/DATA_DESCRIPTION", ack=False) as dd:
        dd_spw = dd.getcol("SPECTRAL_WINDOW_ID")
    out = []
    for k, spw in enumerate(truth.science_spw_ids):
        ddids = np.flatnonzero(dd_spw == int(spw))
        if ddids.size == 0:
            continue
        with table(vis, ack=False) as t:
            q = t.query(f"FIELD_ID=={int(field_id)} && DATA_DESC_ID=={int(ddids[0])} && ANTENNA1!=ANTENNA2",
                        columns=f"{column},FLAG,WEIGHT")
            try:
                v, fl, w = q.getcol(column), q.getcol("FLAG"), q.getcol("WEIGHT")
            finally:
                q.close()
        par = [0, v.shape[2] - 1]
        r = v[:, :, par] / truth.model_flux(field_id, truth.science_chan_freq[k])[None, :, None]
        ok = ~fl[:, :, par]
        ww = np.where(ok, w[:, None, par], 0.0)
        if ww.sum() <= 0:
            continue
        ratio = float(np.abs(np.sum(r * ww)) / np.sum(ww))
        n = ok.sum(axis=(1, 2))
        good = n > 1
        rs, oks, ns = r[good], ok[good], n[good]
        mean = np.sum(np.where(oks, rs, 0), axis=(1, 2)) / ns
        dev = np.where(oks, rs - mean[:, None, None], 0)
        sig2 = np.sum(np.abs(dev) ** 2, axis=(1, 2)) / (2.0 * (ns - 1))  # per component
        phase = np.angle(mean)
        noise = np.sqrt(sig2 / ns) / np.maximum(np.abs(mean), 1e-30)
        out.append(FluxRatio(int(spw), ratio, float(np.degrees(np.sqrt(np.mean(phase ** 2)))),
                             float(np.degrees(np.sqrt(np.mean(noise ** 2))))))
    return out


def transfer_prediction(truth, spw_index: int, *, unseen_only: bool = True) -> TransferPrediction:
    """Residual target phase of an ideal per-scan phase transfer, from the truth.

    The antenna phase is ``arg G - 2 pi nu_c L / c`` with L the unseen path (``dry_path``;
    ``unseen_only=False`` adds the wet path, i.e. no WVR correction). The phase calibrator's
    per-scan solution is the vector mean of the antenna phasor over its scan; per baseline,
    the unwrapped solution phases are interpolated linearly in time (scan centroids) to the
    target integrations, as ``interp='linear'`` does.

    Parameters
    ----------
    truth : fastcal.simulate.Truth
        Truth of the simulated MS.
    spw_index : int
        Position of the science spw on the truth spw axis.
    unseen_only : bool
        Only the path the WVRs do not see (the ideal WVR correction).
    """
    from fastcal.errors import ParameterError

    n_spw = len(truth.science_spw_ids)
    if not 0 <= int(spw_index) < n_spw:
        raise ParameterError(f"spw_index {spw_index} is not a science spw position; valid: 0..{n_spw - 1}")
    t, fld, scan = truth.time, truth.time_field, truth.time_scan
    atm = truth.time_is_atm.astype(bool)
    cal = (fld == truth.field_id("phase")) & ~atm
    tgt = (fld == truth.field_id("target")) & ~atm
    path = truth.dry_path if unseen_only else truth.dry_path + truth.wet_path
    nu = float(np.mean(truth.science_chan_freq[spw_index]))
    scans = np.unique(scan[cal])
    tc = np.array([t[cal & (scan == s)].mean() for s in scans])
    total, count, sq = 0j, 0, 0.0
    for pol in (0, 1):
        ph = np.exp(1j * (np.angle(truth.gains[:, :, spw_index, pol]) - 2 * np.pi * nu * path / _C))
        sol = np.array([ph[cal & (scan == s)].mean(axis=0) for s in scans])  # (n_scan, n_ant)
        n = ph.shape[1]
        for p in range(n):
            for q in range(p + 1, n):
                b = np.unwrap(np.angle(sol[:, p] * np.conj(sol[:, q])))
                r = np.angle(ph[tgt, p] * np.conj(ph[tgt, q]) * np.exp(-1j * np.interp(t[tgt], tc, b)))
                total += np.exp(1j * r).sum()
                sq += float(np.sum(r ** 2))
                count += r.size
    return TransferPrediction(float(abs(total) / count), float(np.degrees(np.sqrt(sq / count))))
