"""The small exception hierarchy every room raises from.

A user sees ``str(error)``: one line naming the problem. Detail goes to the audit log.
"""

from __future__ import annotations


class TesseraError(Exception):
    """Base of every error Tessera raises on purpose."""


class InputError(TesseraError):
    """The user's input (a file, an element, a goal, an option) cannot be used as given."""


class ToolFailed(TesseraError):
    """A tool ran but could not produce its result (a relaxation NaN'd, a timeout, ...)."""


class DataError(TesseraError):
    """Shipped or stored data is missing, corrupt or foreign."""


class StoreError(TesseraError):
    """The candidate store or audit log cannot be opened or written."""
