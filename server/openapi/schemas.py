"""Proto messages as JSON Schemas (OpenAPI 3.1), in the JSON form Envoy's transcoder reads and prints.

Envoy prints with `preserve_proto_field_names` (so field names stay snake_case) and `always_print_primitive_fields`
(so every field that is not `optional`, a message or part of a oneof is always present: those are `required`).
64-bit integers are JSON strings; enums are their value names; well-known types have their canonical JSON forms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as FieldProto

Schema = dict[str, Any]
# A file's comments by SourceCodeInfo location path.
Comments = dict[tuple[int, ...], str]

HTTP_BODY = ".google.api.HttpBody"

_SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    # The transcoder prints 64-bit integers as strings (JSON numbers lose precision above 2^53).
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

# The canonical JSON form of the well-known types (protobuf's JSON mapping), inlined rather than referenced.
_WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array", "items": {}},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {"type": "object", "additionalProperties": True},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.StringValue": {"type": "string"},
    ".google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
    ".google.protobuf.BoolValue": {"type": "boolean"},
    ".google.protobuf.DoubleValue": {"type": "number"},
    ".google.protobuf.FloatValue": {"type": "number"},
    ".google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    ".google.protobuf.UInt32Value": {"type": "integer", "minimum": 0},
    ".google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    ".google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    # A raw body inside a typed message is whatever its content type says; operations describe it by hand.
    HTTP_BODY: {},
}

# SourceCodeInfo location paths: the field numbers of FileDescriptorProto/DescriptorProto/ServiceDescriptorProto.
_MESSAGE_TYPE, _ENUM_TYPE, _SERVICE = 4, 5, 6
_FIELD, _NESTED_TYPE, _NESTED_ENUM, _METHOD = 2, 3, 4, 2


@dataclass
class ProtoIndex:
    """Every message, enum and comment of a descriptor set, by full name (`.jan.llm.v1.Model`)."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    # Leading comments by full name; fields as `.pkg.Message.field`, methods as `.pkg.Service.Method`.
    comments: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_descriptor_set(cls, files: descriptor_pb2.FileDescriptorSet) -> ProtoIndex:
        index = cls()
        for file in files.file:
            comments = {tuple(loc.path): _clean(loc.leading_comments) for loc in file.source_code_info.location}
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                index._add_message(f"{prefix}.{message.name}", message, (_MESSAGE_TYPE, i), comments)
            for i, enum in enumerate(file.enum_type):
                index._add_enum(f"{prefix}.{enum.name}", enum, (_ENUM_TYPE, i), comments)
            for i, service in enumerate(file.service):
                name = f"{prefix}.{service.name}"
                index._comment(name, comments.get((_SERVICE, i)))
                for j, method in enumerate(service.method):
                    index._comment(f"{name}.{method.name}", comments.get((_SERVICE, i, _METHOD, j)))
        return index

    def _add_message(
        self, name: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], comments: Comments
    ) -> None:
        self.messages[name] = message
        self._comment(name, comments.get(path))
        for i, fld in enumerate(message.field):
            self._comment(f"{name}.{fld.name}", comments.get((*path, _FIELD, i)))
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, (*path, _NESTED_TYPE, i), comments)
        for i, enum in enumerate(message.enum_type):
            self._add_enum(f"{name}.{enum.name}", enum, (*path, _NESTED_ENUM, i), comments)

    def _add_enum(
        self, name: str, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], comments: Comments
    ) -> None:
        self.enums[name] = enum
        self._comment(name, comments.get(path))

    def _comment(self, name: str, text: str | None) -> None:
        if text:
            self.comments[name] = text


def _clean(comment: str) -> str:
    return "\n".join(line.strip() for line in comment.strip().splitlines())


def component_name(full_name: str) -> str:
    """`.jan.llm.v1.Model` → `jan.llm.v1.Model`: unique across packages, and a valid components key."""
    return full_name.lstrip(".")


class SchemaBuilder:
    """Builds `components.schemas` on demand: each message reached from an operation, once."""

    def __init__(self, index: ProtoIndex) -> None:
        self.index = index
        self.components: dict[str, Schema] = {}

    def ref(self, type_name: str) -> Schema:
        """A schema for the message or enum `type_name`: inline for well-known types, else a component $ref."""
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        name = component_name(type_name)
        if name not in self.components:
            self.components[name] = {}  # Reserve first: messages may refer to themselves.
            if type_name in self.index.enums:
                self.components[name] = self._enum(type_name)
            else:
                self.components[name] = self.message(type_name)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, type_name: str, *, without: frozenset[str] = frozenset()) -> Schema:
        """The object schema of a message, leaving out the fields in `without` (bound to the path instead)."""
        message = self.index.messages[type_name]
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for fld in message.field:
            if fld.name in without:
                continue
            properties[fld.name] = self.field(type_name, fld)
            if self.always_printed(fld):
                required.append(fld.name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if description := self.index.comments.get(type_name):
            schema["description"] = description
        return schema

    def field(self, message_name: str, fld: FieldProto) -> Schema:
        schema = self._value(fld)
        if fld.label == FieldProto.LABEL_REPEATED and not self._map_entry(fld):
            schema = {"type": "array", "items": schema}
        if description := self.index.comments.get(f"{message_name}.{fld.name}"):
            schema = {**schema, "description": description} if "$ref" not in schema else {
                "allOf": [schema], "description": description}
        return schema

    def always_printed(self, fld: FieldProto) -> bool:
        """Envoy prints unset scalars, enums, lists and maps as zero values, but omits unset `optional` fields,
        messages and oneof members."""
        if fld.proto3_optional or fld.HasField("oneof_index"):
            return False
        return fld.type != FieldProto.TYPE_MESSAGE or fld.label == FieldProto.LABEL_REPEATED

    def _value(self, fld: FieldProto) -> Schema:
        if entry := self._map_entry(fld):
            # JSON object keys are strings whatever the key type; the value is the entry's second field.
            return {"type": "object", "additionalProperties": self._value(entry.field[1])}
        if fld.type == FieldProto.TYPE_ENUM or fld.type == FieldProto.TYPE_MESSAGE:
            return self.ref(fld.type_name)
        return dict(_SCALARS[fld.type])

    def _map_entry(self, fld: FieldProto) -> descriptor_pb2.DescriptorProto | None:
        if fld.type != FieldProto.TYPE_MESSAGE or fld.label != FieldProto.LABEL_REPEATED:
            return None
        nested = self.index.messages.get(fld.type_name)
        return nested if nested is not None and nested.options.map_entry else None

    def _enum(self, type_name: str) -> Schema:
        schema: Schema = {"type": "string", "enum": [value.name for value in self.index.enums[type_name].value]}
        if description := self.index.comments.get(type_name):
            schema["description"] = description
        return schema
