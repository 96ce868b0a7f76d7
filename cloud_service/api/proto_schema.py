"""JSON Schema of a protobuf message in its proto3 JSON form, for the REST bodies that are messages.

The pull/push bodies are the .proto's messages as proto3 JSON (json_format parses and prints
them), so their OpenAPI schema is derived from the descriptor rather than written twice: lower
camelCase names, 64-bit integers as decimal strings (numbers accepted), bytes as base64,
doubles also as "NaN" / "Infinity" / "-Infinity", enums by name. The mapping:
https://protobuf.dev/programming-guides/json/
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

BASE64 = r"^[A-Za-z0-9+/_-]*={0,2}$"
_INT64 = {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": r"^-?[0-9]{1,19}$"}]}
_UINT64 = {
    "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]{1,20}$"}]
}
_FLOAT = {"oneOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte", "pattern": BASE64},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_DOUBLE: _FLOAT,
    FieldDescriptor.TYPE_FLOAT: _FLOAT,
}


def message_schemas(*roots: Descriptor) -> dict[str, dict[str, Any]]:
    """`components/schemas` entries for `roots` and every message they contain, by full name."""
    out: dict[str, dict[str, Any]] = {}
    pending = list(roots)
    while pending:
        message = pending.pop()
        if message.full_name in out:
            continue
        out[message.full_name] = {"type": "object", "additionalProperties": False,
                                  "properties": {}}  # fmt: skip
        for field in message.fields:
            out[message.full_name]["properties"][field.json_name] = _field(field, pending)
    return out


def ref(message: Descriptor) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{message.full_name}"}


def _field(field: FieldDescriptor, pending: list[Descriptor]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        pending.append(field.message_type)
        one: dict[str, Any] = ref(field.message_type)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        one = {"enum": [v.name for v in field.enum_type.values]}
    else:
        one = dict(_SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": one}
    return one
