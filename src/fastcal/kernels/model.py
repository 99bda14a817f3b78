"""Model-visibility kernels: resolved (Gaussian, uniform disk) and offset sources.

``shape_visibility(uvw, freq, kind, major, minor, pa, l_off, m_off)`` returns the visibility of a
unit-flux source per row and channel (complex128 ``(n_row, n_chan)``):

* ``kind`` 0 point, 1 Gaussian (``major``/``minor`` = FWHM, rad), 2 uniform elliptical disk
  (``major``/``minor`` = diameters, rad); ``pa`` = position angle of the major axis (rad,
  east of north). With ``u' = u sin(pa) + v cos(pa)`` (along the major axis) and
  ``v' = u cos(pa) - v sin(pa)`` (along the minor axis), in wavelengths:

  - Gaussian: ``exp(-pi^2 (major^2 u'^2 + minor^2 v'^2) / (4 ln 2))``;
  - disk: ``2 J1(x) / x`` with ``x = pi sqrt(major^2 u'^2 + minor^2 v'^2)``.

* offset ``(l, m)`` (direction cosines, rad): times ``exp(-2 pi i (u l + v m + w (n - 1)))``,
  ``n = sqrt(1 - l^2 - m^2)`` (CASA's sign convention).

numba has no ``scipy.special``: :func:`bessel_j1` is the power series for ``|x| <= 12`` and
Hankel's asymptotic expansion beyond (absolute error < 1e-12 everywhere, tested against the
integral representation).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["bessel_j1", "bessel_j1_array", "jinc", "shape_visibility"]

JIT = dict(nogil=True, cache=True)
C_LIGHT = 299792458.0
_SERIES_LIMIT = 12.0
_GAUSS = math.pi**2 / (4.0 * math.log(2.0))


@numba.njit(**JIT)
def bessel_j1(x):
    """Bessel function of the first kind, order 1, of a float64 `x`."""
    ax = abs(x)
    if ax <= _SERIES_LIMIT:
        half = 0.5 * x
        term = half
        total = half
        q = half * half
        k = 0
        while True:
            term = -term * q / ((k + 1.0) * (k + 2.0))
            total += term
            k += 1
            if abs(term) <= 1e-17 * max(abs(total), 1e-300) and k > ax:
                break
            if k > 200:
                break
        return total
    # Hankel asymptotic expansion, nu = 1 (mu = 4 nu^2 = 4)
    mu = 4.0
    p = 1.0
    q = 0.0
    a = 1.0  # a_k / x^k
    for k in range(1, 60):
        a_next = a * (mu - (2.0 * k - 1.0) ** 2) / (k * 8.0 * ax)
        if abs(a_next) > abs(a):  # the asymptotic series starts to diverge
            break
        a = a_next
        r = k % 4
        if r == 1:
            q += a
        elif r == 2:
            p -= a
        elif r == 3:
            q -= a
        else:
            p += a
        if abs(a) < 1e-17:
            break
    chi = ax - 0.75 * math.pi
    val = math.sqrt(2.0 / (math.pi * ax)) * (p * math.cos(chi) - q * math.sin(chi))
    return val if x > 0 else -val


@numba.njit(**JIT)
def jinc(x):
    """``2 J1(x) / x`` (1 at x = 0)."""
    if abs(x) < 1e-8:
        return 1.0 - x * x / 8.0
    return 2.0 * bessel_j1(x) / x


@numba.njit(**JIT)
def bessel_j1_array(x):
    """:func:`bessel_j1` of every element of a float64 1-D array."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        out[i] = bessel_j1(x[i])
    return out


@numba.njit(**JIT)
def shape_visibility(uvw, freq, kind, major, minor, pa, l_off, m_off):
    """Unit-flux model visibility per row and channel.

    Parameters
    ----------
    uvw : float64 (n_row, 3)
        Baseline coordinates, m.
    freq : float64 (n_chan,)
        Channel frequencies, Hz.
    kind : int
        0 point, 1 Gaussian, 2 uniform disk.
    major, minor, pa : float
        FWHM or diameter (rad), position angle (rad east of north).
    l_off, m_off : float
        Offset direction cosines l, m (rad).

    Returns
    -------
    complex128 (n_row, n_chan)
    """
    n_row = uvw.shape[0]
    n_chan = freq.shape[0]
    out = np.empty((n_row, n_chan), dtype=np.complex128)
    sp = math.sin(pa)
    cp = math.cos(pa)
    n1 = math.sqrt(max(0.0, 1.0 - l_off * l_off - m_off * m_off)) - 1.0
    shifted = l_off != 0.0 or m_off != 0.0
    for r in range(n_row):
        u0 = uvw[r, 0]
        v0 = uvw[r, 1]
        w0 = uvw[r, 2]
        umaj = u0 * sp + v0 * cp
        umin = u0 * cp - v0 * sp
        for c in range(n_chan):
            s = freq[c] / C_LIGHT
            amp = 1.0
            if kind == 1:
                amp = math.exp(-_GAUSS * s * s * (major * major * umaj * umaj + minor * minor * umin * umin))
            elif kind == 2:
                x = math.pi * s * math.sqrt(major * major * umaj * umaj + minor * minor * umin * umin)
                amp = jinc(x)
            if shifted:
                ph = -2.0 * math.pi * s * (u0 * l_off + v0 * m_off + w0 * n1)
                out[r, c] = complex(amp * math.cos(ph), amp * math.sin(ph))
            else:
                out[r, c] = complex(amp, 0.0)
    return out
