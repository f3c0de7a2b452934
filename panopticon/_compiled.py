"""The modules built with mypyc, and whether this process runs them compiled or as Python.

``pip install`` compiles the engine's hot modules (``setup.py``: every record goes through them) into one
extension, ``panopticon._native__mypyc`` plus a small module per source; Python then imports the compiled module
in place of the source beside it. Without a C compiler or mypyc the install keeps the sources, which behave the
same (``make test`` runs the unit and property tests both ways). The sources are imported instead of the build
when ``PANOPTICON_PURE_PYTHON`` is set (to compare, or to rule the build out), and, in a checkout, when a source
is newer than the build (it was edited since ``make install``: the build would run the old code).

Only the standard library here: ``setup.py`` and the Makefile read ``MODULES`` before anything is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MODULES = (
    "panopticon.common.clock",
    "panopticon.common.histogram",
    "panopticon.common.normalize",
    "panopticon.common.otlp",
    "panopticon.common.rollup",
    "panopticon.engine.batch",
    "panopticon.engine.building",
    "panopticon.engine.decode",
    "panopticon.engine.rollups",
)
PURE_ENV = "PANOPTICON_PURE_PYTHON"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def source_path(module: str) -> str:
    """panopticon.engine.decode -> <package>/engine/decode.py"""
    return os.path.join(_PACKAGE, *module.split(".")[1:]) + ".py"


def _built_library() -> str | None:
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    for name in os.listdir(_PACKAGE):
        if name.startswith("_native__mypyc") and any(name.endswith(suffix) for suffix in suffixes):
            return os.path.join(_PACKAGE, name)
    return None


def _reason_for_sources() -> str | None:
    """Why the sources must be imported in place of the build; None to import what is there."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    library = _built_library()
    if library is None:
        return "not built"
    if not os.path.exists(os.path.join(_PACKAGE, os.pardir, "setup.py")):
        return None  # an installed package: its files' times say nothing
    built = os.path.getmtime(library)
    edited = [module for module in MODULES if os.path.getmtime(source_path(module)) > built]
    if edited:
        return f"{', '.join(edited)} edited since the build (run `make install` to rebuild)"
    return None


class _Sources(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources ahead of the extension modules beside them."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        for entry in path or ():
            source = os.path.join(entry, fullname.rpartition(".")[2] + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


def install() -> None:
    """Called once by ``panopticon/__init__.py``, before any compiled module can be imported."""
    reason = _reason_for_sources()
    if reason is None:
        return
    if "edited" in reason:
        warnings.warn(f"panopticon: running the compiled modules as Python: {reason}", stacklevel=2)
    sys.meta_path.insert(0, _Sources())


def build() -> str:
    """``compiled (mypyc)``, or ``pure Python`` and why: what the engine logs at start and the benchmarks record.
    Imports the modules."""
    compiled = [name for name in MODULES if not str(importlib.import_module(name).__file__).endswith(".py")]
    if len(compiled) == len(MODULES):
        return "compiled (mypyc)"
    if compiled:
        return f"partly compiled ({', '.join(compiled)})"
    return f"pure Python ({_reason_for_sources()})"


if __name__ == "__main__":  # the Makefile: the sources a rebuild depends on
    print(" ".join(os.path.relpath(source_path(module)) for module in MODULES))
