"""Tracr's RASP API for raspc. Both spellings work: `from raspc.tracr import rasp`
(this package, holding every name) and Tracr's `from raspc.tracr.rasp import rasp`
(the module)."""
from raspc.tracr.rasp import rasp  # noqa: F401
from raspc.tracr.rasp.rasp import *  # noqa: F401,F403
