"""Ecosystem conventions: console scripts, the README's key table, rule directives."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

from cosmos_posttrain.config_docs import config_table, leaf_keys, replace_table, table_in

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
SCHEMA = REPO / "config" / "config.schema.yaml"


def command_modules() -> set[str]:
    """Modules of the package that run as `python -m cosmos_posttrain.<module>`."""
    found = set()
    for path in (REPO / "cosmos_posttrain").glob("*.py"):
        tree = ast.parse(path.read_text())
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        if has_main and "__main__" in path.read_text():
            found.add(f"cosmos_posttrain.{path.stem}")
    return found


def test_every_module_command_has_a_console_script():
    targets = {spec.split(":")[0] for spec in SCRIPTS.values()}
    assert command_modules() - targets == set()
    assert all(name.startswith("cosmos-") for name in SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_imports_and_runs(name, capsys):
    module, attr = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module), attr)
    assert callable(main)
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_readme_key_table_is_generated_from_the_schema():
    readme = (REPO / "README.md").read_text()
    assert table_in(readme) == config_table(SCHEMA), (
        "README.md's key table is stale: python -m cosmos_posttrain.config_docs --write README.md"
    )
    import yaml

    for key, _, _ in leaf_keys(yaml.safe_load(SCHEMA.read_text())):
        assert readme.count(f"| `{key}` |") == 1, key


def test_replace_table_keeps_the_rest(tmp_path):
    from cosmos_posttrain.config_docs import END, START

    text = f"intro\n{START}\nold\n{END}\nouttro\n"
    new = replace_table(text, "| a |\n")
    assert new == f"intro\n{START}\n| a |\n{END}\nouttro\n"
    assert table_in(new) == "| a |\n"


@pytest.mark.parametrize("rulefile", sorted((REPO / "rules").glob("*.smk")), ids=lambda p: p.name)
def test_every_rule_declares_conda_and_message(rulefile: Path):
    rules = re.split(r"^(?:rule|checkpoint) ", rulefile.read_text(), flags=re.M)[1:]
    for body in rules:
        if any(f"\n    {action}:" in body for action in ("script", "shell", "run")):
            for directive in ("conda", "message"):
                assert f"\n    {directive}:" in body, (body.splitlines()[0], directive)
