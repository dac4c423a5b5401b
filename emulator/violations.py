"""Member-constraint violations gathered into one ValidationException, as AWS reports them.

AWS's request validation checks every member, then answers once: ``2 validation errors
detected: Value 'x y' at 'jobName' failed to satisfy constraint: Member must satisfy regular
expression pattern: …; Value null at 'roleArn' failed to satisfy constraint: Member must not be
null``. :class:`Violations` words each violation that way; the service that uses it says which
exception carries the summary (the Bedrock control plane's or the runtime's).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any


class Violations:
    """Collects member-constraint violations into one ValidationException, as AWS reports them."""

    def __init__(self, make_error: Callable[[str], Exception]) -> None:
        """``make_error`` turns the summary message into the exception to raise."""
        self.make_error = make_error
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        """Record a violation already worded."""
        self.messages.append(message)

    def constraint(self, path: str, value: Any, constraint: str) -> None:
        """Record that ``value`` (quoted as given) at ``path`` breaks ``constraint``."""
        self.add(f"Value '{value}' at '{path}' failed to satisfy constraint: {constraint}")

    def required(self, path: str, value: Any) -> bool:
        """Record ``Value null`` … ``must not be null`` if ``value`` is None; True when present."""
        if value is None:
            self.add(
                f"Value null at '{path}' failed to satisfy constraint: Member must not be null"
            )
        return value is not None

    def string(
        self,
        path: str,
        value: Any,
        low: int,
        high: int,
        pattern: str | re.Pattern[str] | None,
        shown: str | None = None,
    ) -> None:
        """Record the first of: not a string, shorter than ``low``, longer than ``high``, or not
        fully matching ``pattern`` (skipped when None).

        The message quotes the pattern as ``shown``, by default the pattern's own text; pass it
        where the service model spells the pattern other than the regex that checks it.
        """
        if not isinstance(value, str):
            self.constraint(path, value, "Member must be a string")
        elif len(value) < low:
            self.constraint(path, value, f"Member must have length greater than or equal to {low}")
        elif len(value) > high:
            self.constraint(path, value, f"Member must have length less than or equal to {high}")
        elif pattern is not None and re.fullmatch(pattern, value) is None:
            if shown is None:
                shown = pattern if isinstance(pattern, str) else pattern.pattern
            self.constraint(path, value, f"Member must satisfy regular expression pattern: {shown}")

    def enum(self, path: str, value: Any, allowed: Sequence[str]) -> None:
        """Record a violation if ``value`` is not one of ``allowed``."""
        if value not in allowed:
            detail = f"Member must satisfy enum value set: [{', '.join(allowed)}]"
            self.constraint(path, value, detail)

    def integer(self, path: str, value: Any, low: int, high: int) -> int | None:
        """Check an integer member given as an int or as a string of digits after any ``-``.

        Records ``Member must be an integer`` for anything else (bools and floats included) and
        returns None; otherwise records a value outside ``low``..``high`` and returns the value.
        """
        if isinstance(value, str) and value.lstrip("-").isdigit():
            with contextlib.suppress(ValueError):  # digits int() refuses: "--5", "²"
                value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.constraint(path, value, "Member must be an integer")
            return None
        self._range(path, value, low, high)
        return value

    def integer_text(self, path: str, text: str, low: int, high: int) -> int:
        """Check an integer member given as text that ``int()`` parses (so a sign, surrounding
        whitespace and underscores are accepted).

        Records ``Member must be an integer`` when ``int()`` refuses the text and returns
        ``low``; otherwise records a value outside ``low``..``high`` and returns the value.
        """
        try:
            value = int(text)
        except ValueError:
            self.constraint(path, text, "Member must be an integer")
            return low
        self._range(path, value, low, high)
        return value

    def list_length(self, path: str, value: Any, low: int, high: int) -> list[Any]:
        """Record a violation if ``value`` is not a list, or (else) its length is outside
        ``low``..``high``; returns the list (empty when it is not one)."""
        if not isinstance(value, list):
            self.add(f"Value at '{path}' failed to satisfy constraint: Member must be a list")
            return []
        if len(value) < low:
            self.add(
                f"Value at '{path}' failed to satisfy constraint: Member must have length greater "
                f"than or equal to {low}"
            )
        elif len(value) > high:
            self.add(
                f"Value at '{path}' failed to satisfy constraint: Member must have length less "
                f"than or equal to {high}"
            )
        return value

    def error(self) -> Exception:
        """The exception that reports everything recorded: ``N validation error(s) detected: …``."""
        count = len(self.messages)
        noun = "error" if count == 1 else "errors"
        return self.make_error(f"{count} validation {noun} detected: {'; '.join(self.messages)}")

    def raise_if_any(self) -> None:
        """Raise :meth:`error` if anything was recorded."""
        if self.messages:
            raise self.error()

    def _range(self, path: str, value: int, low: int, high: int) -> None:
        """Record a violation if ``value`` is below ``low`` or (else) above ``high``."""
        if value < low:
            self.constraint(path, value, f"Member must have value greater than or equal to {low}")
        elif value > high:
            self.constraint(path, value, f"Member must have value less than or equal to {high}")
