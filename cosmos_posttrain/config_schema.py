"""Checking the workflow configuration against its JSON schema, every error at once.

Snakemake's own `validate` stops at the first error and prints the whole schema; users need
the dotted key and what is wrong with it, for all keys in one go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import CosmosPosttrainError


class ConfigError(CosmosPosttrainError):
    """The configuration does not match the schema; the message names each bad key."""


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def config_problems(config: dict, schema_path: str | Path) -> list[str]:
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(known))
            for name in extra:
                key = _key([*error.path, name])
                problems.append(f"{key}: unknown key (known here: {', '.join(known)})")
        else:
            problems.append(f"{_key(error.path)}: {error.message}")
    return problems


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every problem; the config itself is not changed."""
    problems = config_problems(config, schema_path)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid configuration ({schema_path}):\n{lines}")
