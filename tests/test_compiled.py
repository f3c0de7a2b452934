"""The mypyc build (setup.py): the hot modules run compiled where a C compiler was there at install, and
PANOPTICON_PURE_PYTHON runs their sources instead. `make test` runs the tests without servers both ways."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from panopticon import _compiled

PURE = os.environ.get(_compiled.PURE_ENV, "") not in ("", "0")


def compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.mark.skipif(PURE, reason="this run imports the sources")
def test_the_hot_modules_run_compiled_when_a_compiler_was_there() -> None:
    if compiler() is None:
        pytest.skip("no C compiler: the install kept the sources")
    files = {name: str(importlib.import_module(name).__file__) for name in _compiled.MODULES}
    assert all(not path.endswith(".py") for path in files.values()), (_compiled.build(), files)
    assert _compiled.build() == "compiled (mypyc)"


def test_the_switch_imports_the_sources() -> None:
    code = ("import importlib; from panopticon import _compiled; "
            "print(_compiled.build()); "
            "print(all(str(importlib.import_module(n).__file__).endswith('.py') for n in _compiled.MODULES))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, _compiled.PURE_ENV: "1"},
                         capture_output=True, text=True, check=True, timeout=60).stdout.split("\n")
    assert out[:2] == [f"pure Python ({_compiled.PURE_ENV} is set)", "True"]


def test_every_compiled_module_has_its_source() -> None:
    """The sources are the fallback, and the build's input: each listed module must exist as a .py file."""
    assert all(os.path.isfile(_compiled.source_path(name)) for name in _compiled.MODULES)
