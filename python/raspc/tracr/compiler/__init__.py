"""Tracr's compiler package for raspc: `from raspc.tracr.compiler import compiling, lib`."""
from raspc.tracr.compiler import assemble, compiling, lib, lowering  # noqa: F401
