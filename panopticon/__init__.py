"""Panopticon, a self-hosted APM backend. Its parts keep the repository's top-level folders and are installed
under this one name: ``panopticon.common``, ``.engine``, ``.api``, ``.bridge`` and ``.devtools`` (the local stack
and traffic for development). In a checkout they are links to those folders (see the README)."""

from panopticon import _compiled

_compiled.install()  # before any compiled module is imported: PANOPTICON_PURE_PYTHON, or a stale build
