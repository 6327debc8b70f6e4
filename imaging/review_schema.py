"""JSON Schemas of the messages a client may send to a review room (docs/review-protocol.md).

One declarative schema per message type is easier to review than hand-written checks, and
gives the same strictness to every field. They are compiled once, at import, by fastjsonschema
into plain Python checks: a view is checked in about 20 µs instead of jsonschema's 300, on the
relay path of every view (issue 13). The schemas use nothing past draft 7. fastjsonschema
anchors ``$`` at the very end of a string, so a UID with a trailing newline, which
jsonschema's ``re.search`` let through, is refused too.
"""

import fastjsonschema

MAX_MESSAGE_BYTES = 8 * 1024
MAX_ANNOTATIONS = 200
ANNOTATION_TOOLS = ["Length", "Angle", "RectangleROI", "EllipticalROI", "ArrowAnnotate"]

_UID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": 64}
_NUMBER = {"type": "number", "minimum": -1e7, "maximum": 1e7}
_HEAD = {"v": {"const": 1}, "seq": {"type": "integer", "minimum": 0, "maximum": 2**53}}

VIEW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["study", "series", "index", "voi", "zoom", "pan"],
    "properties": {
        "study": _UID,
        "series": _UID,
        "index": {"type": "integer", "minimum": 0, "maximum": 9999},
        "voi": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ww", "wc"],
            "properties": {
                "ww": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
                "wc": _NUMBER,
            },
        },
        "zoom": {"type": "number", "exclusiveMinimum": 0, "maximum": 64},
        "pan": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
        "rotation": {"enum": [0, 90, 180, 270]},
        "flipH": {"type": "boolean"},
        "flipV": {"type": "boolean"},
        "pointer": {
            "oneOf": [
                {"type": "null"},
                {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2},
            ]
        },
    },
}

ANNOTATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["uid", "tool", "study", "series", "sop", "points"],
    "properties": {
        "uid": {"type": "string", "pattern": r"^[A-Za-z0-9.\-]{1,64}$"},
        "tool": {"enum": ANNOTATION_TOOLS},
        "study": _UID,
        "series": _UID,
        "sop": _UID,
        "frame": {"type": "integer", "minimum": 1, "maximum": 100000},
        "points": {
            "type": "array",
            "minItems": 1,
            "maxItems": 8,
            "items": {"type": "array", "items": _NUMBER, "minItems": 3, "maxItems": 3},
        },
        "text": {"type": "string", "maxLength": 200},
    },
}


def _message(type_: str, properties: dict | None = None, required=()) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["v", "type", "seq", *required],
        "properties": {**_HEAD, "type": {"const": type_}, **(properties or {})},
    }


SCHEMAS = {
    "view": _message("view", {"view": VIEW}, ["view"]),
    "annotation": {
        "oneOf": [
            _message(
                "annotation",
                {"op": {"const": "upsert"}, "annotation": ANNOTATION},
                ["op", "annotation"],
            ),
            _message(
                "annotation",
                {"op": {"const": "remove"}, "uid": ANNOTATION["properties"]["uid"]},
                ["op", "uid"],
            ),
            _message("annotation", {"op": {"const": "clear"}}, ["op"]),
        ]
    },
    "take_control": _message("take_control"),
    "request_control": _message("request_control"),
    "release_control": _message("release_control"),
    "grant_control": _message("grant_control", {"to": {"type": "integer", "minimum": 1}}, ["to"]),
}
VALIDATORS = {name: fastjsonschema.compile(schema) for name, schema in SCHEMAS.items()}


def validated(message) -> dict | None:
    """The message if it is one the protocol knows and it matches its schema, else None."""
    if not isinstance(message, dict):
        return None
    validator = VALIDATORS.get(message.get("type"))
    if validator is None:
        return None
    try:
        validator(message)
    except fastjsonschema.JsonSchemaException:
        return None
    return message
