"""The primitives of the Nova model's input checker: JSON-schema rules worded as Bedrock words them.

Each check raises :func:`malformed`'s ValidationException, ``Malformed input request: <pointer>:
<detail>, please reformat your input and try again.``, where ``pointer`` is the JSON pointer of
the offending member (``#/singleEmbeddingParams/text``) and ``detail`` follows the wording of the
everit JSON-schema validator the real checker's messages show (``required key [x] not found``,
``extraneous key [x] is not permitted``, ``x is not a valid enum value``, ``expected type: String,
found: Integer``, ``expected maxLength: 8192, actual: 9000``, ``5 is not greater or equal to 800``).
Enum messages add the allowed values, and one-of messages name the members found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emulator.errors import ServiceError, bedrock_validation


def malformed(pointer: str, detail: str) -> ServiceError:
    """The ValidationException the model's schema checker gives for ``detail`` at ``pointer``."""
    return bedrock_validation(
        f"Malformed input request: {pointer}: {detail}, please reformat your input and try again."
    )


def require_object(value: Any, pointer: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object; the type error otherwise."""
    if not isinstance(value, Mapping):
        raise malformed(pointer, f"expected type: JSONObject, found: {_json_type(value)}")
    return value


def require_keys(obj: Mapping[str, Any], pointer: str, keys: tuple[str, ...]) -> None:
    """Raise for the first of ``keys`` that ``obj`` lacks."""
    for key in keys:
        if key not in obj:
            raise malformed(pointer, f"required key [{key}] not found")


def exactly_one(obj: Mapping[str, Any], pointer: str, names: tuple[str, ...]) -> str:
    """The one member of ``names`` that ``obj`` holds; an error if it holds none or several."""
    present = [name for name in names if name in obj]
    if len(present) != 1:
        found = f"found {len(present)}" + (f": [{', '.join(present)}]" if present else "")
        raise malformed(pointer, f"exactly one of [{', '.join(names)}] must be present, {found}")
    return present[0]


def reject_extraneous(obj: Mapping[str, Any], pointer: str, allowed: tuple[str, ...]) -> None:
    """Raise for the first member of ``obj`` that is not in ``allowed``."""
    for key in obj:
        if key not in allowed:
            raise malformed(pointer, f"extraneous key [{key}] is not permitted")


def string_member(obj: Mapping[str, Any], key: str, pointer: str) -> str:
    """``obj[key]`` if it is a string; the type error otherwise."""
    value = obj[key]
    if not isinstance(value, str):
        raise malformed(f"{pointer}/{key}", f"expected type: String, found: {_json_type(value)}")
    return value


def enum_member(obj: Mapping[str, Any], key: str, pointer: str, allowed: tuple[str, ...]) -> str:
    """``obj[key]`` if it is one of the strings ``allowed``."""
    value = string_member(obj, key, pointer)
    if value not in allowed:
        raise malformed(
            f"{pointer}/{key}", f"{value} is not a valid enum value (one of [{', '.join(allowed)}])"
        )
    return value


def integer_member(obj: Mapping[str, Any], key: str, pointer: str) -> int:
    """``obj[key]`` if it is a JSON integer (not a boolean, not a float such as ``256.0``)."""
    value = obj[key]
    # bool is an int subclass in Python but a distinct JSON type.
    if not isinstance(value, int) or isinstance(value, bool):
        raise malformed(f"{pointer}/{key}", f"expected type: Integer, found: {_json_type(value)}")
    return value


def integer_enum_member(
    obj: Mapping[str, Any], key: str, pointer: str, allowed: tuple[int, ...]
) -> int:
    """``obj[key]`` if it is one of the integers ``allowed``."""
    value = integer_member(obj, key, pointer)
    if value not in allowed:
        listed = ", ".join(str(item) for item in allowed)
        detail = f"{value} is not a valid enum value (one of [{listed}])"
        raise malformed(f"{pointer}/{key}", detail)
    return value


def bounded_integer_member(
    obj: Mapping[str, Any], key: str, pointer: str, low: int, high: int
) -> int:
    """``obj[key]`` if it is an integer within ``[low, high]``."""
    value = integer_member(obj, key, pointer)
    if value < low:
        raise malformed(f"{pointer}/{key}", f"{value} is not greater or equal to {low}")
    if value > high:
        raise malformed(f"{pointer}/{key}", f"{value} is not less or equal to {high}")
    return value


def check_length(value: str, pointer: str, low: int, high: int) -> None:
    """Raise unless ``value`` has between ``low`` and ``high`` characters (code points)."""
    if len(value) < low:
        raise malformed(pointer, f"expected minLength: {low}, actual: {len(value)}")
    if len(value) > high:
        raise malformed(pointer, f"expected maxLength: {high}, actual: {len(value)}")


def _json_type(value: Any) -> str:
    """The JSON type name of a parsed value, as the checker's messages spell it."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    return "JSONObject" if isinstance(value, Mapping) else type(value).__name__
