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


def _doc_commands() -> dict[str, set[str]]:
    """docs/mqtt.md's topic table: each ``cmd/<name>`` row's payload fields."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text()
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or cells[2] != "in" or not cells[1].startswith("`cmd/"):
            continue
        names = re.findall(r"`cmd/([a-z_]+)`", cells[1])
        fields = set(re.findall(r'"([a-z_]+)"', cells[4].split("—")[0].split("(")[0]))
        for name in names:
            out[name] = fields
    return out


def test_the_docs_list_every_command_with_its_fields() -> None:
    documented = _doc_commands()
    assert set(documented) == {k.value for k in bridge.CommandKind}
    for kind, spec in bridge.SPECS.items():
        assert documented[kind.value] == set(spec.fields), kind


def test_the_docs_list_every_state() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("`state.state`:"))
    assert line.split("`")[3].split() == [s.value for s in State]


def test_audit_and_fuzz_seeds_follow_the_registry() -> None:
    from fuzz.seeds import mqtt_seeds
    from treadctl.daemon import audit

    assert {k.value for k, s in bridge.SPECS.items() if s.audited} == audit.AUDITED
    assert {"start", "stop", "pause", "resume", "reset", "estop"} == audit.AUDITED
    seeded = {MQTT_KINDS[seed[0]] for seed in mqtt_seeds()}
    assert seeded == {k.value for k in bridge.CommandKind}
