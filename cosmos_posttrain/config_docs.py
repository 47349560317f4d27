"""The README's table of configuration keys, generated from config/config.schema.yaml.

The schema already holds each key's type, default, bounds and description, and it is what
start-up checks against; writing the table from it means the documentation cannot drift from
what the workflow accepts. `python -m cosmos_posttrain.config_docs --write README.md` replaces
the table between its two marker lines; a test fails when they differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .cli import run_cli
from .errors import CosmosPosttrainError
from .fsutil import write_text_atomic

START = "<!-- config-table:start (generated from config/config.schema.yaml) -->"
END = "<!-- config-table:end -->"
DEFAULT_SCHEMA = Path(__file__).resolve().parents[1] / "config" / "config.schema.yaml"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    kinds = spec.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    text = " or ".join(str(k) for k in kinds)
    if spec.get("type") == "array" and "items" in spec:
        text = f"list of {spec['items'].get('type', 'any')}"
    bounds = []
    if "minimum" in spec:
        bounds.append(f"≥ {spec['minimum']}")
    if "exclusiveMinimum" in spec:
        bounds.append(f"> {spec['exclusiveMinimum']}")
    if "maximum" in spec:
        bounds.append(f"≤ {spec['maximum']}")
    return f"{text}, {', '.join(bounds)}" if bounds else text


def _default(spec: dict[str, Any], required: bool) -> str:
    if "default" in spec:
        return f"`{json.dumps(spec['default'], ensure_ascii=False)}`"
    return "required" if required else "none"


def leaf_keys(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, dict, bool]]:
    """(dotted key, its schema, required) for every key that holds a value, in schema order."""
    keys = []
    required = set(schema.get("required", []))
    for name, spec in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        if spec.get("type") == "object" and "properties" in spec:
            keys += leaf_keys(spec, f"{dotted}.")
        else:
            keys.append((dotted, spec, name in required))
    return keys


def config_table(schema_path: str | Path = DEFAULT_SCHEMA) -> str:
    """The markdown table: one row per key, grouped by block, with the block's description."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    blocks = schema.get("properties", {})
    current = ""
    for dotted, spec, required in leaf_keys(schema):
        block = dotted.split(".")[0] if "." in dotted else ""
        if block and block != current:
            about = blocks[block].get("description", "")
            lines.append(f"| **`{block}:`** | | | {_cell(about)} |")
        current = block
        lines.append(
            f"| `{dotted}` | {_type(spec)} | {_default(spec, required)} | "
            f"{_cell(spec.get('description', ''))} |"
        )
    return "\n".join(lines) + "\n"


def replace_table(text: str, table: str) -> str:
    """`text` with the part between the markers replaced by `table`."""
    if START not in text or END not in text:
        raise CosmosPosttrainError(f"the markers {START!r} and {END!r} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def table_in(text: str) -> str:
    """The table between the markers of `text`."""
    if START not in text or END not in text:
        raise CosmosPosttrainError(f"the markers {START!r} and {END!r} are missing")
    return text.split(START, 1)[1].split(END, 1)[0].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schema", default=str(DEFAULT_SCHEMA))
    p.add_argument("--write", metavar="README", help="replace the table in this file")
    args = p.parse_args(argv)

    def action() -> None:
        table = config_table(args.schema)
        if args.write:
            path = Path(args.write)
            write_text_atomic(path, replace_table(path.read_text(encoding="utf-8"), table))
        else:
            print(table, end="")

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
