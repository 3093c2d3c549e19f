"""Unknown names: the " Did you mean ...?" hint error messages end with (stdlib difflib), and the lookup
in a named catalogue (recipes, inits) that raises a message listing the known names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

_T = TypeVar("_T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" Did you mean 'a', 'b'?"`` naming up to three of ``known`` close to ``name`` (difflib's default
    similarity cutoff 0.6), or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def lookup(catalog: Mapping[str, _T], name: str, what: str, error: type[Exception]) -> _T:
    """``catalog[name]``; otherwise ``error("unknown <what> 'name'; expected one of a, b, .... Did you
    mean ...?")`` (the known names in catalogue order)."""
    try:
        return catalog[name]
    except KeyError:
        hint = did_you_mean(name, catalog)
        raise error(f"unknown {what} {name!r}; expected one of {', '.join(catalog)}.{hint}") from None
