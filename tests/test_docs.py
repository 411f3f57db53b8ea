"""The docs promise what the code does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (ROOT / "docs" / "cli.md").read_text()
    assert gen.render() == current, "run: python scripts/gen_cli_docs.py"


def test_readme_quick_start_has_exactly_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```console", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_command_maps_to_the_module_that_defines_it() -> None:
    """`tipline CMD` imports only COMMAND_MODULES[CMD]: the map must cover every command."""
    from tipline.cli.app import COMMAND_MODULES, _register, app, invoked_command

    _register()
    seen = {}
    for info in app.registered_commands:
        fn = getattr(info.callback, "__wrapped__", info.callback)
        seen[info.name or fn.__name__.replace("_", "-")] = fn.__module__.rsplit(".", 1)[-1]
    for group in app.registered_groups:
        sub = group.typer_instance
        modules = {
            getattr(c.callback, "__wrapped__", c.callback).__module__.rsplit(".", 1)[-1]
            for c in sub.registered_commands
        }
        name = group.name if isinstance(group.name, str) else sub.info.name
        assert isinstance(name, str) and len(modules) == 1, (name, modules)
        seen[name] = modules.pop()
    assert seen == COMMAND_MODULES
    assert invoked_command(["--data-dir", "x", "bank", "list"]) == "bank"
    assert invoked_command(["--data-dir=x", "scan", "a"]) == "scan"
    assert invoked_command(["--help"]) is None
