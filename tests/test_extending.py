"""Extension points: a third-party package adds a signal type and a provenance reader through
Python entry points (a real installed distribution's metadata on sys.path, no patching)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tipline import provenance
from tipline.banks.bank import Bank, Entry
from tipline.errors import InvalidSignalError
from tipline.index.bank_index import BankIndex
from tipline.record import ItemRecord
from tipline.signals import types as signal_types


@pytest.fixture
def plugin_on_path(tmp_path: Path) -> Iterator[None]:
    """Installs ``tipline_example_plugin`` the way pip would: a module and its dist-info."""
    (tmp_path / "tipline_example_plugin.py").write_text(
        textwrap.dedent(
            """
            from tipline import provenance
            from tipline.findings import Finding
            from tipline.signals.types import SignalType

            # a second exact type over an item's SHA-1 (stands in for a partner's hash)
            PARTNER = SignalType(
                "example_partner_sha1",
                40,
                "example: SHA-1 as a partner names it",
                examples=("a" * 40, "b" * 40),
                record_field="sha1",
            )


            def _read(ctx):
                if ctx.data.startswith(b"EXAMPLE-AI"):
                    return [Finding("generator_metadata", "ai_generated", "ExampleGen")]
                return []


            def register_readers():
                provenance.register_reader("example_reader", _read, kinds=("text",))
            """
        )
    )
    dist = tmp_path / "tipline_example_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tipline-example-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[tipline.signal_types]\npartner = tipline_example_plugin:PARTNER\n\n"
        "[tipline.readers]\nexample = tipline_example_plugin:register_readers\n"
    )
    sys.path.insert(0, str(tmp_path))
    signal_types._PLUGINS_LOADED = False
    provenance._plugins_loaded = False
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tipline_example_plugin", None)
        signal_types.unregister("example_partner_sha1")
        provenance.unregister_reader("example_reader")
        signal_types._PLUGINS_LOADED = False
        provenance._plugins_loaded = False


def test_entry_point_signal_type_is_matched(plugin_on_path: None) -> None:
    st = signal_types.signal_type("example_partner_sha1")
    assert st.normalise("A" * 40) == "a" * 40
    idx = BankIndex.build([Bank("PARTNER")], [Entry("PARTNER", st.name, "c" * 40, id=1)])
    [m] = idx.match(ItemRecord(path="x", sha1="c" * 40))
    assert (m.bank, m.signal_type) == ("PARTNER", "example_partner_sha1")


def test_entry_point_reader_runs_in_analyse(plugin_on_path: None) -> None:
    findings = provenance.analyse(b"EXAMPLE-AI and some bytes")
    assert any(f.generator == "ExampleGen" for f in findings)
    assert not any(f.generator == "ExampleGen" for f in provenance.analyse(b"plain text"))


def test_without_the_plugin_its_names_are_unknown() -> None:
    with pytest.raises(InvalidSignalError):
        signal_types.signal_type("example_partner_sha1")
    assert "example_reader" not in {r.name for r in provenance.registered_readers()}
