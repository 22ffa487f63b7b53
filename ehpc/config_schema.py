"""The workflow config against configs/schema.yaml, the one owner of its keys and defaults.

The Snakefile (workflow/rules/config.smk) calls :func:`check_config` when it is read, so
by ``snakemake -n`` too: every key the config leaves out that has a ``default`` in the
schema is filled in from there, then the whole config is validated, and the rules read
plain ``config[...]`` lookups.  Only stdlib, YAML and jsonschema: no torch, no PySCF.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml


def load_schema(path: Path | str) -> dict:
    """configs/schema.yaml (the Snakefile passes the one beside it)."""
    return yaml.safe_load(Path(path).read_text())


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> None:
    """Set every key missing from ``instance`` whose schema property has a ``default``,
    recursively through nested objects (jsonschema only checks, it never fills in).

    Follows local ``$ref`` (``#/$defs/...``); a value of the wrong type is left to the
    validation that follows.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])  # never share the schema's lists
        if key in instance:
            fill_defaults(instance[key], sub, root)


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if not ref or not ref.startswith("#/"):
        return schema
    target = root
    for part in ref[2:].split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}


def check_config(config: dict, path: Path | str) -> str | None:
    """Fill ``config`` in place with the schema's defaults and validate it; None when it
    is valid, else the most relevant error as one line naming the key."""
    import jsonschema

    schema = load_schema(path)
    fill_defaults(config, schema)
    errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
    error = jsonschema.exceptions.best_match(errors)
    return None if error is None else schema_message(error)


def schema_message(error) -> str:
    """``infer.rankz: unknown key; did you mean 'ranks'?`` and the like."""
    where = ".".join(str(p) for p in error.absolute_path)
    prefix = f"{where}: " if where else ""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        key = next(k for k in error.instance if k not in known)
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
        return f"{where + '.' if where else ''}{key}: unknown key{hint}"
    if error.validator == "required":
        return f"{prefix}{error.message}"
    value = repr(error.instance)
    message = error.message
    if len(value) > 60:  # a whole section: say which, not what it holds
        message = message.replace(value, "this value")
    return f"{prefix}{message[:200]}"
