"""Integers of the REST bodies: JSON numbers without coercion from strings or booleans.

The request models are strict (pydantic `strict=True`: "1" is not 1, 1 is not true), but JSON
has one number type, so an integral float (981.0) is still the integer it spells. Ids and
timestamps are at most 2^53 − 1, the integers every JSON parser (JavaScript's too) holds exactly;
the gRPC contract's int64 is wider.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

JSON_SAFE = 2**53 - 1


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]
JsonId = Annotated[int, Field(ge=0, le=JSON_SAFE), BeforeValidator(_integral)]
