"""Panopticon, a self-hosted APM backend. Its parts keep the repository's top-level folders and are installed
under this one name: ``panopticon.common``, ``.engine``, ``.api``, ``.bridge`` and ``.devtools`` (the local stack
and traffic for development). In a checkout they are links to those folders (see the README)."""
