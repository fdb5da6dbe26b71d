#!/usr/bin/env python
"""Make a tiny simulated MeasurementSet for tests (casatools.simulator, no real data).

usage: python ci/make_ms.py OUT.ms [--nant 4] [--nchan 8] [--nint 6] [--overwrite] [--check]

4 antennas (VLA site, ~100 m baselines), one spw of 8 x 1 MHz channels at 1.4 GHz, RR/LL,
one field with a 1 Jy point source at the phase centre, 10 s integrations. Takes well under a
second once casatools is imported. --check also runs listobs, flagdata(mode='summary'), split,
tclean (64 px) and imstat on it and prints the timings.

Needs the offline CASA config from ci/casa.sh: if CASASITECONFIG is unset and
<repo>/.ci-state/casa/config.py exists, it is used (it must be set before casatools is
imported).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASE_CENTRE = ("J2000", "12h00m00.0s", "+45d00m00.0s")


def _casa_env() -> None:
    if "CASASITECONFIG" not in os.environ:
        cfg = ROOT / ".ci-state" / "casa" / "config.py"
        if cfg.is_file():
            os.environ["CASASITECONFIG"] = str(cfg)
        else:
            sys.exit(
                "CASASITECONFIG is not set and .ci-state/casa/config.py is missing: "
                "run ci/casa.sh install first"
            )


def make_ms(out: str, nant: int = 4, nchan: int = 8, nint: int = 6, overwrite: bool = False) -> str:
    """Write the MeasurementSet to `out` and return its absolute path."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not overwrite:
            raise FileExistsError(out)
        shutil.rmtree(out)
    _casa_env()
    from casaconfig import config
    from casatools import componentlist, logsink, measures, simulator

    # Until casatasks is imported nothing sends casacore's log to the configured logfile, so
    # the simulator would write to stderr; do what casatasks does at import (but leave an
    # existing casalog, possibly redirected by the caller, alone).
    if "casatasks" not in sys.modules:
        logsink(config.logfile).setglobal(True)

    me = measures()
    sm = simulator()
    cl = componentlist()
    tmp = tempfile.mkdtemp(prefix="make_ms-")
    try:
        # Antenna positions in metres, local east/north/up around the VLA site.
        east = [0.0, 100.0, -80.0, 30.0, 150.0, -140.0, 60.0, -30.0]
        north = [0.0, 50.0, 90.0, -120.0, -60.0, -20.0, 160.0, -170.0]
        if not 2 <= nant <= len(east):
            raise ValueError(f"nant must be 2..{len(east)}")
        x, y, z = east[:nant], north[:nant], [0.0] * nant

        sm.open(out)
        sm.setconfig(
            telescopename="VLA",
            x=x,
            y=y,
            z=z,
            dishdiameter=[25.0] * nant,
            mount=["alt-az"] * nant,
            antname=[f"A{i:02d}" for i in range(nant)],
            padname=[f"P{i:02d}" for i in range(nant)],
            coordsystem="local",
            referencelocation=me.observatory("VLA"),
        )
        sm.setspwindow(
            spwname="SPW0",
            freq="1.4GHz",
            deltafreq="1MHz",
            freqresolution="1MHz",
            nchannels=nchan,
            stokes="RR LL",
        )
        sm.setfeed(mode="perfect R L")
        sm.setfield(sourcename="SRC", sourcedirection=me.direction(*PHASE_CENTRE))
        sm.setlimits(shadowlimit=0.001, elevationlimit="8deg")
        sm.setauto(autocorrwt=0.0)
        sm.settimes(
            integrationtime="10s",
            usehourangle=True,
            referencetime=me.epoch("utc", "2024/01/01/00:00:00"),
        )
        sm.observe("SRC", "SPW0", starttime="0s", stoptime=f"{10 * nint}s")

        cl_path = os.path.join(tmp, "point.cl")
        cl.addcomponent(
            dir=" ".join(PHASE_CENTRE), flux=1.0, fluxunit="Jy", freq="1.4GHz", shape="point"
        )
        cl.rename(cl_path)
        cl.close(log=False)
        sm.predict(complist=cl_path)
    finally:
        sm.close()
        cl.done()
        me.done()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check(ms: str) -> None:
    """Run the casatasks the tests use on `ms`, in a scratch directory."""
    _casa_env()
    import casatasks

    work = tempfile.mkdtemp(prefix="make_ms-check-")
    try:

        def timed(name, fn, **kw):
            t = time.monotonic()
            r = fn(**kw)
            print(f"{name:9s} {time.monotonic() - t:6.2f} s", flush=True)
            return r

        obs = timed("listobs", casatasks.listobs, vis=ms, listfile=os.path.join(work, "l.txt"))
        assert obs["nfields"] == 1, obs
        summ = timed("flagdata", casatasks.flagdata, vis=ms, mode="summary")
        assert summ["total"] > 0, summ
        split_ms = os.path.join(work, "split.ms")
        timed("split", casatasks.split, vis=ms, outputvis=split_ms, datacolumn="data")
        assert os.path.isdir(split_ms)
        img = os.path.join(work, "img")
        timed(
            "tclean",
            casatasks.tclean,
            vis=split_ms,
            imagename=img,
            imsize=64,
            cell="20arcsec",
            niter=20,
            weighting="natural",
            specmode="mfs",
        )
        stats = timed("imstat", casatasks.imstat, imagename=img + ".image")
        peak = float(stats["max"][0])
        print(f"peak {peak:.3f} Jy/beam, rows {summ['total']}")
        assert 0.5 < peak < 1.5, stats
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--nant", type=int, default=4)
    p.add_argument("--nchan", type=int, default=8)
    p.add_argument("--nint", type=int, default=6)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--check", action="store_true", help="run listobs..imstat on the result")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    try:
        out = make_ms(a.out, a.nant, a.nchan, a.nint, a.overwrite)
    except FileExistsError as e:
        p.error(f"{e} exists (use --overwrite)")
    print(f"wrote {out} in {time.monotonic() - t0:.2f} s (incl. casatools import)")
    if a.check:
        check(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
