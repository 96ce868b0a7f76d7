"""How a secure-aggregation step fails: the round cannot go on, or a message breaks a rule."""

from __future__ import annotations


class RoundAborted(Exception):
    """The round cannot complete (fewer than t devices left at some stage, or a refused step);
    no partial sum is ever released."""


class InvalidMessage(RoundAborted, ValueError):
    """A message or request that breaks a protocol rule (malformed, duplicated, out of the
    roster, altered ciphertext, unsafe unmask request). The object that raised it changed no
    state, so the caller may drop the offending message and retry the step; `except
    RoundAborted` also catches it."""


class WrongStage(RuntimeError):
    """A step called before the one it follows, or twice: a bug in the caller, not in a device."""
