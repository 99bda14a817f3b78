"""applycal safety: a SIGKILL half-way leaves DATA untouched, flags restorable and a re-run
identical to an uninterrupted run; a second writer fails clearly instead of interleaving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import casacore.tables as ct
import numpy as np
import pytest
from truth_tables import true_gains

from fastcal.apply import applycal
from fastcal.errors import ApplyError
from fastcal.flagversions import list_flag_versions, restore_flags

CHUNK_BYTES = 4000  # a few timestamps per block: many blocks on a tiny MS


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from fastcal.simulate import SimConfig, simulate

    d = tmp_path_factory.mktemp("safety")
    path = d / "s.ms"
    truth = simulate(path, config=SimConfig.tiny(seed=3))
    sci = [int(s) for s in truth.science_spw_ids]
    flag = {s: np.zeros((truth.time.size, len(truth.antenna_names), 1, 2), bool) for s in sci}
    for s in sci:
        flag[s][::3, 1] = True  # some flagged solutions, so FLAG changes
    g = true_gains(truth, path, flag=flag)
    gpath = str(g.write(d / "s.G"))
    return path, sci, gpath


def _snapshot(ms, spws):
    out = {}
    with ct.table(str(ms), ack=False) as t:
        for s in spws:
            q = t.query(f"DATA_DESC_ID == {s}")
            for c in ("DATA", "FLAG", "WEIGHT") + (
                ("CORRECTED_DATA",) if "CORRECTED_DATA" in t.colnames() else ()
            ):
                out[(c, s)] = q.getcol(c)
            q.close()
    return out


_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import fastcal.apply
    from fastcal.apply import applycal
    fastcal.apply.FLUSH_EVERY_BYTES = 1  # flush after every block, so a kill leaves a half-written MS
    ms, table, spw, delay, gate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    def progress(done, total):
        print(f"BLOCK {done} {total}", flush=True)
        time.sleep(delay)
        if gate and done == 1:  # hold the MS until the test opens the gate
            t0 = time.time()
            while not os.path.exists(gate) and time.time() - t0 < 60:
                time.sleep(0.05)
    applycal(ms, [table], spw=spw, chunk_bytes=CHUNK_BYTES, n_threads=1, progress=progress)
    print("DONE", flush=True)
""").replace("CHUNK_BYTES, n_threads=1", str(CHUNK_BYTES) + ", n_threads=1")


def _start(ms, gpath, sci, delay, gate=""):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            str(ms),
            gpath,
            ",".join(map(str, sci)),
            str(delay),
            str(gate),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_block(proc, n):
    for line in proc.stdout:
        if line.startswith("BLOCK"):
            done, total = map(int, line.split()[1:])
            assert total > n + 2, "the MS must have more blocks than the kill point"
            if done >= n:
                return
    raise AssertionError(f"subprocess ended early: {proc.stderr.read()[-2000:]}")


def test_sigkill_midway_then_rerun_is_identical(setup, copy_ms):
    path, sci, gpath = setup
    pristine = _snapshot(path, sci)
    ref = copy_ms(path, "ref.ms")
    applycal(ref, [gpath], spw=",".join(map(str, sci)), chunk_bytes=CHUNK_BYTES)
    expected = _snapshot(ref, sci)

    ms = copy_ms(path, "killed.ms")
    proc = _start(ms, gpath, sci, delay=0.2)
    _wait_for_block(proc, 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    mid = _snapshot(ms, sci)
    for s in sci:  # DATA untouched
        np.testing.assert_array_equal(mid[("DATA", s)], pristine[("DATA", s)])
    # half-way: some but not all flags of the reference were written
    n_mid = sum(int(mid[("FLAG", s)].sum()) for s in sci)
    n_ref = sum(int(expected[("FLAG", s)].sum()) for s in sci)
    assert 0 < n_mid < n_ref
    # flags restorable from the backup made before the first write
    assert [v.name for v in list_flag_versions(ms)] == ["applycal_1"]
    restore_flags(ms, "applycal_1")
    restored = _snapshot(ms, sci)
    for s in sci:
        np.testing.assert_array_equal(restored[("FLAG", s)], pristine[("FLAG", s)])
    # killed again half-way (flags partly written, not restored), then a full re-run
    proc = _start(ms, gpath, sci, delay=0.2)
    _wait_for_block(proc, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    rep = applycal(ms, [gpath], spw=",".join(map(str, sci)), chunk_bytes=CHUNK_BYTES)
    assert rep.flag_version == "applycal_3"
    got = _snapshot(ms, sci)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))


def test_second_writer_fails_clearly_and_does_not_interleave(setup, copy_ms):
    path, sci, gpath = setup
    ref = copy_ms(path, "ref2.ms")
    applycal(ref, [gpath], spw=",".join(map(str, sci)), chunk_bytes=CHUNK_BYTES)
    expected = _snapshot(ref, sci)
    ms = copy_ms(path, "shared.ms")
    gate = ms.parent / "gate"
    proc = _start(ms, gpath, sci, delay=0.0, gate=gate)
    try:
        _wait_for_block(proc, 1)
        with pytest.raises(ApplyError, match="being written by another process"):
            applycal(ms, [gpath], spw=",".join(map(str, sci)))
        gate.touch()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert "DONE" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [v.name for v in list_flag_versions(ms)] == [
        "applycal_1"
    ]  # the second writer wrote nothing
    got = _snapshot(ms, sci)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))
