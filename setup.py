"""Builds the engine's hot modules with mypyc (``panopticon/_compiled.py`` lists them) when ``pip install`` runs.

Every record goes through these modules; compiled, they take less CPU per event (``make bench``, core and e2e).
Without a C compiler, or with ``PANOPTICON_PURE_PYTHON=1`` at install time, the package installs as Python
sources only, which behave the same. Everything else is declared in ``pyproject.toml``.
"""

import os
import runpy
import sys

from setuptools import setup

compiled = runpy.run_path(os.path.join("panopticon", "_compiled.py"))


def extensions() -> list:
    if os.environ.get(compiled["PURE_ENV"], "") not in ("", "0"):
        print(f"panopticon: {compiled['PURE_ENV']} is set: installing the sources only", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify

        # Not the project's mypy settings (`make lint` checks those): the build environment has none of the
        # dependencies but msgspec, so their types are unknown here.
        sources = [os.path.relpath(compiled["source_path"](name)) for name in compiled["MODULES"]]
        modules = mypycify(["--config-file=", "--ignore-missing-imports", *sources],
                           group_name="panopticon._native", opt_level="3")
    except (Exception, SystemExit) as exc:  # no mypyc, or a module it cannot compile: the sources serve
        print(f"panopticon: not compiling ({type(exc).__name__}: {exc}); installing the sources only",
              file=sys.stderr)
        return []
    for module in modules:
        module.optional = True  # no C compiler: build_ext skips it, and the sources serve
    return modules


setup(ext_modules=extensions())
