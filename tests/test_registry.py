"""tipline.registry: the one register/unregister/get behind signal types, index kinds and
provenance readers."""

from __future__ import annotations

import threading

import pytest

from tipline import provenance
from tipline.errors import InvalidSignalError
from tipline.index import signal_index
from tipline.registry import Registry
from tipline.signals import types as signal_types


class _Err(Exception):
    pass


def test_register_get_names_and_order() -> None:
    reg: Registry[int] = Registry("widget", error=_Err, items=[("b", 2), ("a", 1)])
    assert reg.get("a") == 1 and reg.find("b") == 2 and reg.find("c") is None
    assert reg.names() == ["a", "b"]  # sorted
    assert list(reg.snapshot()) == ["b", "a"]  # registration order
    assert "a" in reg and "c" not in reg and len(reg) == 2
    reg.register("b", 20, replace=True)  # a replaced name keeps its place
    assert list(reg.snapshot().items()) == [("b", 20), ("a", 1)]
    assert reg.unregister("b") == 20
    reg.register("b", 3)  # re-registered: last
    assert list(reg.snapshot()) == ["a", "b"]


def test_unknown_and_duplicate_names_are_clear_errors() -> None:
    reg: Registry[int] = Registry("widget", error=_Err, items=[("a", 1)])
    with pytest.raises(_Err, match=r"^unknown widget 'x' \(known: a\)$"):
        reg.get("x")
    with pytest.raises(_Err, match=r"^widget 'a' is already registered$"):
        reg.register("a", 2)
    assert reg.get("a") == 1  # the refused registration changed nothing
    with pytest.raises(_Err, match=r"^unknown widget 'x'"):
        reg.unregister("x")
    assert reg.unregister("x", missing_ok=True) is None
    with pytest.raises(_Err, match="non-empty name"):
        reg.register("", 1)
    empty: Registry[int] = Registry("widget")
    with pytest.raises(KeyError, match=r"known: none"):
        empty.get("a")


def test_a_snapshot_is_never_changed_in_place() -> None:
    reg: Registry[int] = Registry("widget", items=[("a", 1)])
    before = reg.snapshot()
    reg.register("b", 2)
    reg.unregister("a")
    assert before == {"a": 1}  # a reader holding the old snapshot sees a consistent one
    assert reg.snapshot() == {"b": 2}


def test_concurrent_registrations_are_all_kept() -> None:
    reg: Registry[int] = Registry("widget")

    def add(base: int) -> None:
        for i in range(200):
            reg.register(f"{base}-{i}", i)

    threads = [threading.Thread(target=add, args=(b,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reg) == 1600


def test_signal_types_use_it() -> None:
    st = signal_types.SignalType("registry_test_sha1", 40, "test", examples=("a" * 40, "b" * 40))
    assert signal_types.register(st) is st
    try:
        assert signal_types.signal_type("REGISTRY_TEST_SHA1") is st
        assert signal_types.SIGNAL_TYPES["registry_test_sha1"] is st
        replacement = signal_types.SignalType("registry_test_sha1", 40, "replaced")
        signal_types.register(replacement)  # re-registering replaces, as documented
        assert signal_types.signal_type("registry_test_sha1") is replacement
    finally:
        signal_types.unregister("registry_test_sha1")
    signal_types.unregister("registry_test_sha1")  # unknown: no error
    with pytest.raises(InvalidSignalError, match=r"unknown signal type 'Registry_Test_Sha1'"):
        signal_types.signal_type("Registry_Test_Sha1")  # the name as given, not normalised


def test_index_kinds_use_it() -> None:
    assert {"exact", "hamming", "vpdq", "tlsh"} <= set(signal_index.index_kinds())
    signal_index.register_index_kind("registry_test", signal_index.ExactIndex)
    try:
        assert isinstance(signal_index.new_index("registry_test"), signal_index.ExactIndex)
    finally:
        signal_index.unregister_index_kind("registry_test")
    with pytest.raises(InvalidSignalError, match=r"unknown index kind 'registry_test' \(known: "):
        signal_index.new_index("registry_test")


def test_readers_run_cheapest_first_ties_in_registration_order() -> None:
    def none(_ctx: provenance.ReadContext) -> list[provenance.Finding]:
        return []

    names = ["registry_t2", "registry_t1", "registry_t3"]
    for name in names:
        provenance.register_reader(name, none, cost=7)
    try:
        provenance.register_reader("registry_t1", none, cost=7)  # replaced: keeps its place
        provenance.register_reader("registry_t0", none, cost=6)
        ours = [r.name for r in provenance.registered_readers() if r.name.startswith("registry_")]
        assert ours == ["registry_t0", *names]
        costs = [r.cost for r in provenance.registered_readers()]
        assert costs == sorted(costs)
    finally:
        for name in [*names, "registry_t0"]:
            provenance.unregister_reader(name)
    assert not any(r.name.startswith("registry_") for r in provenance.registered_readers())
