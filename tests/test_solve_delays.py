"""gaintype='K' (solve_delays): delays against the truth and the radiometer equation.

Sign: the simulator's K_p = exp(-2 pi i tau_p (nu - nu_c)) (docs/simulate.md) is CASA's
K Jones exp(+2 pi i tau (nu - nu_ref)) with tau = -tau_sim; CASA 6.7 gaincal gives the same
sign as fastcal on this data (checked by hand, scripts/casa_parity_solve.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.caltable import read_caltable
from fastcal.errors import UnsupportedError
from fastcal.simulate import SimConfig, simulate
from fastcal.solve import solve_delays, solve_gains

N_ANT = 8
FIELD = 0


@pytest.fixture(scope="module")
def delay_ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("k") / "k.ms"
    cfg = SimConfig.tiny(seed=21).replace(n_ant=N_ANT, n_chan=64)
    truth = simulate(path, config=cfg, tsys=False, wvr=False, gains=False, bandpass=False,
                     dry_residual=False)
    return path, truth


def test_delays_match_truth_within_radiometer_noise(delay_ms, tmp_path):
    path, truth = delay_ms
    out = tmp_path / "k.cal"
    tab = solve_gains(path, out, field=str(FIELD), spw=",".join(map(str, truth.science_spw_ids)),
                      gaintype="K", refant="0")
    assert tab.vis_cal == "K Jones" and read_caltable(out).equals(tab)
    n = N_ANT
    n_int = int(np.sum((truth.time_field == FIELD) & ~truth.time_is_atm))
    errs, preds = [], []
    for k, spw in enumerate(truth.science_spw_ids):
        s = tab.solutions(int(spw))
        assert np.all(s.refant == -1)  # CASA writes ANTENNA2 = -1 for K
        tau = s.params[0, :, 0, :]     # ns, CASA convention
        want = -(truth.delays_ns - truth.delays_ns[0])
        assert not s.flag.any()
        d = tau - want
        d = d - d.mean(axis=0)         # reference to the array mean (removes refant noise)
        errs.append(np.abs(d).ravel())
        f = truth.science_chan_freq[k]
        flux = truth.model_flux(FIELD, f).mean()
        s_ch = truth.noise_sigma[str(spw)] / (flux * np.sqrt(n_int))   # rad per channel
        s_bl = s_ch / (2 * np.pi * np.sqrt(np.sum((f - f.mean()) ** 2))) * 1e9  # ns
        preds.append(s_bl * np.sqrt(n - 1) / n)
        # PARAMERR is the 1-sigma delay error with the refant fixed: sigma_bl sqrt(2/N)
        ratio = np.median(s.paramerr[0, 1:, 0, :]) / (s_bl * np.sqrt(2 / n))
        assert 0.6 < ratio < 1.6, ratio
    assert np.median(np.concatenate(errs)) <= 1.5 * 0.6745 * np.median(preds)


def test_solve_delays_alias_and_kmbd_unsupported(delay_ms):
    path, truth = delay_ms
    spw = str(truth.science_spw_ids[0])
    a = solve_delays(path, field=str(FIELD), spw=spw, refant="0")
    b = solve_gains(path, field=str(FIELD), spw=spw, refant="0", gaintype="K")
    assert a.equals(b)
    with pytest.raises(UnsupportedError, match="KMBD"):
        solve_delays(path, combine="spw", refant="0")


def test_delay_per_integration(delay_ms):
    path, truth = delay_ms
    spw = int(truth.science_spw_ids[0])
    tab = solve_gains(path, field=str(FIELD), spw=str(spw), refant="0", gaintype="K",
                      solint="int")
    s = tab.solutions(spw)
    n_int = int(np.sum((truth.time_field == FIELD) & ~truth.time_is_atm))
    assert s.params.shape[0] == n_int
    want = -(truth.delays_ns - truth.delays_ns[0])
    assert np.max(np.abs(s.params[:, :, 0, :] - want[None])) < 0.05
