"""One registry per kind of thing: the MQTT commands (bridge.CommandKind) and the states
(the safety machine's). Discovery, the lane, the bridge and the fuzz targets read them."""

from __future__ import annotations

from fuzz.targets import MQTT_KINDS
from treadctl.control.machine import State
from treadctl.daemon import bridge, discovery, service


def test_discovery_lists_are_the_registries() -> None:
    assert {k.value for k in bridge.CommandKind} == discovery.COMMAND_SUFFIXES
    assert list(discovery.STATES) == [s.value for s in State]


def test_every_command_has_a_spec_and_a_handler() -> None:
    assert set(bridge.SPECS) == set(bridge.CommandKind)
    # cmd/estop is handled in the socket read callback, never through the queue.
    assert set(service.HANDLERS) == set(bridge.CommandKind) - {bridge.CommandKind.ESTOP}
    assert {"start", "resume", "set", "pause"} == service.SUPERSEDED_BY_STOP


def test_fuzz_targets_read_the_registry() -> None:
    assert MQTT_KINDS[:-1] == bridge.COMMANDS == tuple(k.value for k in bridge.CommandKind)
