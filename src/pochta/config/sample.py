"""Write a complete, commented pochta.toml from the Settings Structs.

Every key is written with the doc line of its field above it, so the file a user gets from
``pochta init`` is also the reference of what can be set.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import msgspec.inspect as mi

from pochta.config.settings import Settings

_INTERNAL = frozenset({"config_path"})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (TOML 1.0 §Inline Table), keys quoted
        if not value:
            return "{}"
        pairs = (f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _doc(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata) and t.extra_json_schema:
        return str(t.extra_json_schema.get("description", ""))
    return ""


def render_config(values: dict[str, dict[str, Any]]) -> str:
    """TOML text for Settings with ``values`` (table -> key -> value) over the defaults."""
    out = [
        "# pochta configuration. `pochta check` validates this file; every key is listed with",
        "# its default. Relative paths are relative to server.data_dir.",
        "",
    ]
    root = mi.type_info(Settings)
    assert isinstance(root, mi.StructType)
    for table in root.fields:
        if table.name in _INTERNAL:
            continue
        st = table.type
        while isinstance(st, mi.Metadata):
            st = st.type
        assert isinstance(st, mi.StructType)
        if st.cls.__doc__ and not st.cls.__doc__.startswith(st.cls.__name__):
            for line in st.cls.__doc__.strip().splitlines():
                out.append(f"# {line.strip()}".rstrip())
        out.append(f"[{table.encode_name}]")
        given = values.get(table.encode_name, {})
        for f in st.fields:
            doc = _doc(f.type)
            if doc:
                out.append(f"# {doc}")
            if f.encode_name in given:
                value = given[f.encode_name]
            elif f.default is not msgspec.NODEFAULT:
                value = f.default
            elif f.default_factory is not msgspec.NODEFAULT:
                value = f.default_factory()
            else:
                raise ValueError(f"{table.encode_name}.{f.encode_name} needs a value")
            out.append(f"{f.encode_name} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)
