"""Strap URLs and the process-wide strap registry (treadctl/hr/registry.py): one strap, one
lane."""

from __future__ import annotations

import threading

import pytest

from treadctl.hr.registry import STRAPS, StrapInUse, StrapRegistry, check_strap_config
from treadctl.hr.strap import HRURLError, parse_hr_url

A = "ble://AA:BB:CC:DD:EE:01"


def test_a_strap_bound_to_one_lane_is_refused_to_another() -> None:
    reg = StrapRegistry()
    u = reg.bind(A, "lane-1")
    assert u.scheme == "ble" and u.ble_address == "AA:BB:CC:DD:EE:01"
    with pytest.raises(StrapInUse, match=r"ble://AA:BB:CC:DD:EE:01 is already bound to lane "
                                         r"'lane-1'; lane 'lane-2' cannot use it"):
        reg.bind("ble://aa:bb:cc:dd:ee:01", "lane-2")  # the same strap, lower case
    assert reg.holder(A) == "lane-1"
    # The same lane again: fine (idempotent).
    reg.bind(A, "lane-1")
    # Another lane cannot release it...
    assert not reg.release(A, "lane-2")
    assert reg.holder(A) == "lane-1"
    # ...its lane can, and then the other lane may bind it.
    assert reg.release(A, "lane-1")
    assert reg.holder(A) is None
    reg.bind(A, "lane-2")
    assert reg.bound() == {A: "lane-2"}


def test_name_prefixes_conflict_and_differ_from_addresses() -> None:
    reg = StrapRegistry()
    reg.bind("ble://name=Polar H10", "lane-1")
    with pytest.raises(StrapInUse):
        reg.bind("ble://name=Polar H10", "lane-2")
    reg.bind(A, "lane-2")  # an address is another key (cannot be known before connecting)
    assert reg.release_lane("lane-1") == ["ble://name=Polar H10"]
    assert reg.bound() == {A: "lane-2"}


def test_simulated_straps_are_per_lane_and_never_conflict() -> None:
    reg = StrapRegistry()
    url = "sim-hr://?faults=dropout@60"
    assert reg.bind(url, "lane-1").faults == "dropout@60"
    assert reg.bind(url, "lane-2").scheme == "sim-hr"
    assert reg.bound() == {} and reg.holder(url) is None
    assert not reg.release(url, "lane-1")


@pytest.mark.parametrize("url, message", [
    ("ble://zz", "bad MAC address 'zz'"),
    ("sim://", "sim:// is a simulated treadmill; the simulated strap is sim-hr://"),
    ("sim-hr://?faults=bogus@1", "unknown strap fault 'bogus'"),
    ("sim-hr://?faults=dropout", "missing @SECONDS"),
    ("sim-hr://?age=7", "age must be a number in 10..100"),
    ("", "expected ble://ADDRESS"),
])
def test_bad_urls_are_refused_with_one_line_and_bind_nothing(url: str, message: str) -> None:
    reg = StrapRegistry()
    with pytest.raises(HRURLError, match=message.replace("(", r"\(").replace("?", r"\?")) as e:
        reg.bind(url, "lane-1")
    assert "\n" not in str(e.value)
    assert reg.bound() == {}
    assert not reg.release(url, "lane-1")


def test_every_simulated_fault_parses() -> None:
    u = parse_hr_url("sim-hr://?faults=dropout@60+10,contact-lost@90,stuck@100+5,"
                     "spike@120+30,fake-199@200,wrong-person@300&seed=3&age=50&rest=60")
    assert (u.seed, u.age_years, u.hr_rest_bpm) == (3, 50.0, 60.0)


def test_check_strap_config_reports_duplicates_and_bad_urls_in_lane_order() -> None:
    problems = check_strap_config({"lane-1": A, "lane-2": None, "lane-3": A.lower(),
                                   "lane-4": "ble://nope", "lane-5": "sim-hr://",
                                   "lane-6": "sim-hr://"})
    assert problems == [
        "lane 'lane-3': hr: strap ble://aa:bb:cc:dd:ee:01 is already given to lane 'lane-1';"
        " one strap is on one person",
        "lane 'lane-4': hr: bad heart-rate URL 'ble://nope': bad MAC address 'nope' "
        "(expected AA:BB:CC:DD:EE:FF or name=PREFIX)",
    ]
    assert check_strap_config([("a", A), ("b", "ble://AA:BB:CC:DD:EE:02")]) == []


def test_concurrent_binds_give_the_strap_to_exactly_one_lane() -> None:
    reg = StrapRegistry()
    won: list[str] = []
    lost: list[str] = []
    barrier = threading.Barrier(8)

    def worker(lane: str) -> None:
        barrier.wait()
        try:
            reg.bind(A, lane)
            won.append(lane)
        except StrapInUse:
            lost.append(lane)

    threads = [threading.Thread(target=worker, args=(f"lane-{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert reg.bound() == {A: won[0]}


def test_the_process_wide_registry_is_one_object() -> None:
    from treadctl.hr import registry

    assert registry.STRAPS is STRAPS
    STRAPS.bind("ble://AA:BB:CC:DD:EE:7F", "test-lane")
    try:
        with pytest.raises(StrapInUse):
            STRAPS.bind("ble://AA:BB:CC:DD:EE:7F", "other-lane")
    finally:
        STRAPS.release_lane("test-lane")
    assert STRAPS.holder("ble://AA:BB:CC:DD:EE:7F") is None
