"""Home Assistant MQTT discovery payloads: shape, topics, templates, removal."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from treadctl.daemon.discovery import (
    COMMAND_SUFFIXES,
    HR_QUALITIES,
    HR_SOURCES,
    STATES,
    birth_topic,
    discovery_messages,
    removal_messages,
)

PROGRAMS = ["reverse-walk-intro", "quick-demo", "backward-uphill-walk"]

# Full (unabbreviated) keys from Home Assistant's MQTT docs, per component. Anything
# else in a payload is a typo or an abbreviation mixed in.
COMMON_KEYS = {
    "name",
    "unique_id",
    "device",
    "origin",
    "availability",
    "availability_mode",
    "icon",
    "entity_category",
    "enabled_by_default",
    "qos",
    "json_attributes_topic",
    "json_attributes_template",
    "encoding",
}
COMPONENT_KEYS = {
    "sensor": {
        "state_topic",
        "value_template",
        "device_class",
        "state_class",
        "unit_of_measurement",
        "options",
        "suggested_display_precision",
        "expire_after",
        "force_update",
    },
    "binary_sensor": {
        "state_topic",
        "value_template",
        "device_class",
        "payload_on",
        "payload_off",
        "expire_after",
        "force_update",
        "off_delay",
    },
    "button": {"command_topic", "command_template", "payload_press", "retain", "device_class"},
    "select": {
        "command_topic",
        "command_template",
        "options",
        "state_topic",
        "value_template",
        "optimistic",
        "retain",
    },
}
REQUIRED_KEYS = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "button": {"command_topic"},
    "select": {"command_topic", "options"},
}
DEVICE_KEYS = {
    "identifiers",
    "connections",
    "name",
    "manufacturer",
    "model",
    "sw_version",
    "hw_version",
    "suggested_area",
    "via_device",
    "configuration_url",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}
# Units Home Assistant accepts for the numeric device classes we use.
DEVICE_CLASS_UNITS = {"speed": {"km/h", "m/s"}, "distance": {"m", "km"}, "duration": {"s"}}

TOPIC_RE = re.compile(
    r"homeassistant/(?P<component>sensor|binary_sensor|button|select)/treadctl/"
    r"(?P<object_id>[A-Za-z0-9_-]+)/config"
)


def _parsed(messages: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for topic, payload in messages:
        assert topic not in out, f"duplicate topic {topic}"
        config = json.loads(payload)
        assert isinstance(config, dict)
        out[topic] = config
    return out


def _by_unique_suffix(configs: dict[str, dict[str, Any]], suffix: str) -> dict[str, Any]:
    matches = [c for c in configs.values() if c["unique_id"] == f"treadctl_lane-1{suffix}"]
    assert len(matches) == 1, suffix
    return matches[0]


@pytest.fixture
def configs() -> dict[str, dict[str, Any]]:
    return _parsed(discovery_messages("lane-1", programs=PROGRAMS))


def test_topics_are_well_formed_and_match_components(configs: dict[str, dict[str, Any]]) -> None:
    components = set()
    for topic, config in configs.items():
        match = TOPIC_RE.fullmatch(topic)
        assert match, topic
        components.add(match["component"])
        assert match["object_id"].startswith("lane-1_")
        assert config["unique_id"] == f"treadctl_{match['object_id']}"
    assert components == {"sensor", "binary_sensor", "button", "select"}


def test_payloads_use_full_documented_keys_only(configs: dict[str, dict[str, Any]]) -> None:
    for topic, config in configs.items():
        component = TOPIC_RE.fullmatch(topic)["component"]  # type: ignore[index]
        allowed = COMMON_KEYS | COMPONENT_KEYS[component]
        assert set(config) <= allowed, (topic, set(config) - allowed)
        assert REQUIRED_KEYS[component] <= set(config), topic
        assert set(config["device"]) <= DEVICE_KEYS
        assert set(config["origin"]) <= ORIGIN_KEYS
        for entry in config["availability"]:
            assert set(entry) <= AVAILABILITY_KEYS


def test_one_device_per_treadmill(configs: dict[str, dict[str, Any]]) -> None:
    devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
    assert len(devices) == 1
    device = next(iter(configs.values()))["device"]
    assert device["identifiers"] == ["treadctl_lane-1"]
    assert device["manufacturer"] == "treadctl"
    assert device["name"] == "Treadmill lane-1"
    assert device["model"]
    other = _parsed(discovery_messages("lane-2", programs=PROGRAMS))
    assert next(iter(other.values()))["device"]["identifiers"] == ["treadctl_lane-2"]


def test_device_name_override() -> None:
    configs = _parsed(discovery_messages("lane-1", programs=[], name="Lane 1 (window)"))
    assert {c["device"]["name"] for c in configs.values()} == {"Lane 1 (window)"}


def test_availability_follows_the_status_topic(configs: dict[str, dict[str, Any]]) -> None:
    for config in configs.values():
        assert config["availability"] == [
            {
                "topic": "treadctl/lane-1/status",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]


def test_unique_ids_are_stable_and_distinct() -> None:
    first = _parsed(discovery_messages("lane-1", programs=PROGRAMS))
    again = _parsed(discovery_messages("lane-1", programs=list(reversed(PROGRAMS))))
    assert [c["unique_id"] for c in first.values()] == [c["unique_id"] for c in again.values()]
    ids = [c["unique_id"] for c in first.values()]
    assert len(ids) == len(set(ids))
    other = {
        c["unique_id"] for c in _parsed(discovery_messages("lane-2", programs=PROGRAMS)).values()
    }
    assert not other & set(ids)


def test_every_command_topic_is_a_contract_topic(configs: dict[str, dict[str, Any]]) -> None:
    seen = set()
    for config in configs.values():
        if "command_topic" not in config:
            continue
        prefix, _, suffix = config["command_topic"].rpartition("/")
        assert prefix == "treadctl/lane-1/cmd"
        assert suffix in COMMAND_SUFFIXES
        # Commands must never be retained (they would fire again on reconnect).
        assert config["retain"] is False
        assert config["qos"] == 1
        seen.add(suffix)
    assert seen == {"start", "stop", "estop", "pause", "resume"}


def test_entity_options_are_the_registries(configs: dict[str, dict[str, Any]]) -> None:
    """The heart-rate sources and qualities and the directions Home Assistant is offered are
    the supervisor's and the controller's own (tests/daemon/test_registry.py: commands and
    states), so a new value cannot be left out of Home Assistant's enum by a copied list."""
    from treadctl.hr.filter import QUALITIES
    from treadctl.hr.supervisor import Source
    from treadctl.types import Direction

    assert get_args(Source) == HR_SOURCES
    assert QUALITIES == HR_QUALITIES
    assert _by_unique_suffix(configs, "_hr_source")["options"] == list(get_args(Source))
    assert _by_unique_suffix(configs, "_hr_quality")["options"] == list(QUALITIES)
    assert _by_unique_suffix(configs, "_direction")["options"] == [d.value for d in Direction]


def test_there_is_no_reset_entity(configs: dict[str, dict[str, Any]]) -> None:
    assert not any("reset" in topic for topic in configs)
    assert not any(c.get("command_topic", "").endswith("/reset") for c in configs.values())


def test_button_payloads_are_valid_commands(configs: dict[str, dict[str, Any]]) -> None:
    buttons = {
        c["command_topic"].rsplit("/", 1)[1]: c
        for t, c in configs.items()
        if t.startswith("homeassistant/button/")
    }
    assert set(buttons) == {"stop", "estop", "pause", "resume"}
    for suffix, config in buttons.items():
        payload = json.loads(config["payload_press"])
        assert isinstance(payload, dict)
        allowed = {"reason"} if suffix == "estop" else {"request_id"}
        assert set(payload) <= allowed


def test_sensor_units_and_classes(configs: dict[str, dict[str, Any]]) -> None:
    speed = _by_unique_suffix(configs, "_speed")
    assert speed["state_topic"] == "treadctl/lane-1/telemetry"
    assert (speed["unit_of_measurement"], speed["device_class"], speed["state_class"]) == (
        "km/h",
        "speed",
        "measurement",
    )
    distance = _by_unique_suffix(configs, "_distance")
    assert (distance["unit_of_measurement"], distance["device_class"]) == ("m", "distance")
    assert distance["state_class"] == "total_increasing"
    incline = _by_unique_suffix(configs, "_incline")
    assert incline["unit_of_measurement"] == "%"
    assert _by_unique_suffix(configs, "_heart_rate")["unit_of_measurement"] == "bpm"
    state = _by_unique_suffix(configs, "_state")
    assert state["state_topic"] == "treadctl/lane-1/state"
    assert state["options"] == list(STATES)
    latched = _by_unique_suffix(configs, "_latched")
    assert latched["state_topic"] == "treadctl/lane-1/state"
    for config in configs.values():
        device_class = config.get("device_class")
        if device_class == "enum":
            # Home Assistant refuses enum sensors with a unit or a state class.
            assert "unit_of_measurement" not in config and "state_class" not in config
            assert config["options"]
        elif device_class in DEVICE_CLASS_UNITS:
            assert config["unit_of_measurement"] in DEVICE_CLASS_UNITS[device_class]


def test_select_offers_the_programs(configs: dict[str, dict[str, Any]]) -> None:
    select = next(c for t, c in configs.items() if t.startswith("homeassistant/select/"))
    assert select["options"] == PROGRAMS
    assert select["command_topic"] == "treadctl/lane-1/cmd/start"
    assert select["command_template"] == '{"program": "{{ value }}"}'


def test_no_programs_no_select() -> None:
    topics = [t for t, _ in discovery_messages("lane-1", programs=[])]
    assert not any("/select/" in t for t in topics)


def test_duplicate_programs_are_offered_once() -> None:
    configs = _parsed(discovery_messages("lane-1", programs=["a", "b", "a"]))
    select = next(c for t, c in configs.items() if "/select/" in t)
    assert select["options"] == ["a", "b"]


@pytest.mark.parametrize("bad", ['say "hi"', "back\\slash", "{{ x }}", "", "  ", "tab\there"])
def test_program_names_that_cannot_be_templated_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="program"):
        discovery_messages("lane-1", programs=["ok", bad])


@pytest.mark.parametrize("bad", ["", "lane/1", "lane+", "#", "/lane"])
def test_invalid_treadmill_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="treadmill_id"):
        discovery_messages(bad, programs=PROGRAMS)
    with pytest.raises(ValueError, match="treadmill_id"):
        removal_messages(bad)


def test_invalid_node_id_and_prefix_are_refused() -> None:
    with pytest.raises(ValueError, match="node_id"):
        discovery_messages("lane-1", programs=[], node_id="")
    with pytest.raises(ValueError, match="prefix"):
        discovery_messages("lane-1", programs=[], prefix="home/#")


def test_ids_outside_the_discovery_alphabet_get_safe_distinct_object_ids() -> None:
    spaced = _parsed(discovery_messages("lane 1", programs=[]))
    dotted = _parsed(discovery_messages("lane.1", programs=[]))
    plain = _parsed(discovery_messages("lane_1", programs=[]))
    for configs in (spaced, dotted, plain):
        for topic in configs:
            assert TOPIC_RE.fullmatch(topic), topic
    assert not set(spaced) & set(dotted)
    assert not set(spaced) & set(plain)
    # The contract topics keep the id as configured.
    assert {c.get("state_topic") for c in spaced.values()} >= {"treadctl/lane 1/state"}
    again = _parsed(discovery_messages("lane 1", programs=[]))
    assert list(again) == list(spaced)


def test_node_ids_outside_the_discovery_alphabet_are_cleaned_stably() -> None:
    # The daemon passes its MQTT client id, "treadctl-<hostname>", which may hold dots.
    messages = discovery_messages("lane-1", programs=["x"], node_id="treadctl-pi.gym")
    topics = [t for t, _ in messages]
    assert all(
        re.fullmatch(r"homeassistant/\w+/treadctl-pi_gym_[0-9a-f]{8}/[\w-]+/config", t)
        for t in topics
    ), topics
    assert topics == [
        t for t, _ in discovery_messages("lane-1", programs=[], node_id="treadctl-pi.gym")
    ] + [topics[-1]]
    assert {t for t, _ in removal_messages("lane-1", node_id="treadctl-pi.gym")} == set(topics)


def test_custom_base_topic_node_and_prefix() -> None:
    configs = _parsed(
        discovery_messages(
            "lane-1", base_topic="gym/north", node_id="north", prefix="ha", programs=["x"]
        )
    )
    for topic, config in configs.items():
        assert re.fullmatch(r"ha/\w+/north/lane-1_\w+/config", topic), topic
        assert config["availability"][0]["topic"] == "gym/north/lane-1/status"
        for key in ("state_topic", "command_topic"):
            if key in config:
                assert config[key].startswith("gym/north/lane-1/")


def test_removal_covers_every_discovery_topic() -> None:
    removal = removal_messages("lane-1")
    assert all(payload == "" for _, payload in removal)
    removal_topics = [t for t, _ in removal]
    assert len(removal_topics) == len(set(removal_topics))
    with_select = {t for t, _ in discovery_messages("lane-1", programs=PROGRAMS)}
    without_select = {t for t, _ in discovery_messages("lane-1", programs=[])}
    assert set(removal_topics) == with_select
    assert without_select < set(removal_topics)
    # Same keyword arguments as discovery_messages are accepted.
    assert removal_messages("lane-1", programs=PROGRAMS, name="x") == removal


def test_birth_topic() -> None:
    assert birth_topic() == "homeassistant/status"
    assert birth_topic("ha") == "ha/status"


# --- templates, rendered with a real Jinja sandbox the way Home Assistant does ------------

STATE_RUNNING = {
    "state": "running",
    "latched": False,
    "reason": None,
    "program": "reverse-walk-intro",
    "segment": 2,
    "direction": "reverse",
    "target_speed_kmh": 2.5,
    "speed_kmh": 2.4371,
    "incline_pct": 0.0,
    "session_id": "20240501-101500-lane-1",
    "ts": "2024-05-01T10:17:03.120Z",
}
STATE_ESTOPPED = {
    **STATE_RUNNING,
    "state": "estopped",
    "latched": True,
    "reason": "remote e-stop",
    "program": None,
    "segment": None,
    "direction": "forward",
}
TELEMETRY = {
    "ts": "2024-05-01T10:17:03.320Z",
    "speed_kmh": 2.4371,
    "direction": "reverse",
    "incline_pct": 1.04,
    "distance_m": 412.77,
    "elapsed_s": 187.6,
    "hr_bpm": 131,
}


def _render(template: str, payload: dict[str, Any]) -> str:
    sandbox = pytest.importorskip(
        "jinja2.sandbox", reason="jinja2 (Home Assistant's template engine) is not installed"
    )
    env = sandbox.ImmutableSandboxedEnvironment()
    text = json.dumps(payload)
    return str(env.from_string(template).render(value=text, value_json=json.loads(text)))


def _value(configs: dict[str, dict[str, Any]], suffix: str, payload: dict[str, Any]) -> str:
    return _render(_by_unique_suffix(configs, suffix)["value_template"], payload)


def test_templates_on_a_running_session(configs: dict[str, dict[str, Any]]) -> None:
    assert _value(configs, "_state", STATE_RUNNING) == "running"
    assert _value(configs, "_reason", STATE_RUNNING) == "None"  # -> "unknown" in HA
    assert _value(configs, "_direction", STATE_RUNNING) == "reverse"
    assert float(_value(configs, "_target_speed", STATE_RUNNING)) == 2.5
    assert float(_value(configs, "_segment", STATE_RUNNING)) == 2
    assert _value(configs, "_session", STATE_RUNNING) == "20240501-101500-lane-1"
    assert _value(configs, "_latched", STATE_RUNNING) == "OFF"
    assert float(_value(configs, "_speed", TELEMETRY)) == 2.4
    assert float(_value(configs, "_incline", TELEMETRY)) == 1.0
    assert float(_value(configs, "_distance", TELEMETRY)) == 413
    assert float(_value(configs, "_elapsed", TELEMETRY)) == 188
    assert float(_value(configs, "_heart_rate", TELEMETRY)) == 131
    select = next(c for t, c in configs.items() if "/select/" in t)
    assert _render(select["value_template"], STATE_RUNNING) == "reverse-walk-intro"


def test_templates_on_a_latched_estop(configs: dict[str, dict[str, Any]]) -> None:
    assert _value(configs, "_state", STATE_ESTOPPED) == "estopped"
    assert _value(configs, "_latched", STATE_ESTOPPED) == "ON"
    assert _value(configs, "_reason", STATE_ESTOPPED) == "remote e-stop"
    assert _value(configs, "_current_program", STATE_ESTOPPED) == "None"
    assert _value(configs, "_segment", STATE_ESTOPPED) == "None"


def test_templates_turn_nulls_and_missing_keys_into_unknown(
    configs: dict[str, dict[str, Any]],
) -> None:
    for suffix in ("_speed", "_incline", "_distance", "_elapsed", "_heart_rate"):
        assert _value(configs, suffix, {"ts": "x"}) == "None", suffix
    for key, suffix in (
        ("speed_kmh", "_speed"),
        ("distance_m", "_distance"),
        ("hr_bpm", "_heart_rate"),
    ):
        assert _value(configs, suffix, {**TELEMETRY, key: None}) == "None", suffix
    for suffix in (
        "_state",
        "_direction",
        "_reason",
        "_current_program",
        "_session",
        "_target_speed",
    ):
        assert _value(configs, suffix, {"ts": "x"}) == "None", suffix
    # Unknown latch must not read as "not latched".
    assert _value(configs, "_latched", {"ts": "x"}) == "None"
    assert _value(configs, "_latched", {"latched": "yes"}) == "None"
    # Values outside an enum's options read as unknown rather than an HA error.
    assert _value(configs, "_state", {"state": "exploded"}) == "None"
    select = next(c for t, c in configs.items() if "/select/" in t)
    assert _render(select["value_template"], {"program": {"name": "inline"}}) == "None"
    assert _render(select["value_template"], {"program": "not-offered"}) == "None"


def test_state_template_accepts_the_controller_snapshot(
    configs: dict[str, dict[str, Any]],
) -> None:
    # The state topic is fed from the controller's snapshot; its field names must match.
    controller = pytest.importorskip("treadctl.control.controller")
    snapshot = controller.Snapshot().as_dict()
    assert _value(configs, "_state", snapshot) == "idle"
    assert _value(configs, "_direction", snapshot) == "forward"
    assert _value(configs, "_latched", snapshot) == "OFF"
    assert float(_value(configs, "_speed", snapshot)) == 0.0
    assert float(_value(configs, "_distance", snapshot)) == 0.0


def test_select_command_template_renders_a_valid_start_command(
    configs: dict[str, dict[str, Any]],
) -> None:
    select = next(c for t, c in configs.items() if "/select/" in t)
    sandbox = pytest.importorskip("jinja2.sandbox")
    env = sandbox.ImmutableSandboxedEnvironment()
    for program in select["options"]:
        rendered = env.from_string(select["command_template"]).render(value=program)
        assert json.loads(rendered) == {"program": program}


def test_non_ascii_program_names_round_trip() -> None:
    configs = _parsed(discovery_messages("lane-1", programs=["Rückwärts gehen", "ok"]))
    select = next(c for t, c in configs.items() if "/select/" in t)
    assert select["options"] == ["Rückwärts gehen", "ok"]
    assert _render(select["value_template"], {"program": "Rückwärts gehen"}) == "Rückwärts gehen"
    sandbox = pytest.importorskip("jinja2.sandbox")
    rendered = (
        sandbox.ImmutableSandboxedEnvironment()
        .from_string(select["command_template"])
        .render(value="Rückwärts gehen")
    )
    assert json.loads(rendered) == {"program": "Rückwärts gehen"}


# --- the example broker ACL (docs/examples/mosquitto/treadctl.acl), on a real mosquitto ----
#
# Home Assistant only sees what its broker account may read and only presses what it may
# write; this checks the documented accounts against a running broker. Publish rights are
# read from MQTT v5 PUBACK reason codes; read rights by delivery, with a marker message
# published after the probe (one publisher, so the broker keeps the order).

MOSQUITTO = shutil.which("mosquitto")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
ACL_FILE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "mosquitto" / "treadctl.acl"
ACL_USERS = ("treadctl-daemon", "gym-backend", "staff-tablet", "homeassistant")


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt missing")
    d = tmp_path_factory.mktemp("broker")
    passwd = d / "passwd"
    for index, user in enumerate(ACL_USERS):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", *create, str(passwd), user, f"pw-{user}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {passwd}",
        f"acl_file {ACL_FILE}",
        f"listener {port} 127.0.0.1",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # else mosquitto drops to a user who cannot read tmp_path
    (d / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(d / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mosquitto did not start: {proc.communicate()[1]!r}")
            time.sleep(0.05)  # polling for the broker's port, not waiting on time
    yield port
    proc.terminate()
    proc.wait(timeout=10)


class _Client:
    def __init__(self, port: int, user: str) -> None:
        from paho.mqtt.client import Client, MQTTv5
        from paho.mqtt.enums import CallbackAPIVersion

        self.acks: dict[int, Any] = {}
        self.received: queue.Queue[str] = queue.Queue()
        self.acked = threading.Condition()
        client = Client(CallbackAPIVersion.VERSION2, protocol=MQTTv5)
        client.username_pw_set(user, f"pw-{user}")
        client.on_publish = self._on_publish
        client.on_message = lambda _c, _u, msg: self.received.put(msg.topic)
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.acked:
            self.acks[mid] = reason
            self.acked.notify_all()

    def may_publish(self, topic: str) -> bool:
        info = self.client.publish(topic, "{}", qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, timeout=10), topic
            reason = self.acks[info.mid]
        return not reason.is_failure

    def subscribe(self, pattern: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_args: done.set()
        self.client.subscribe(pattern, qos=1)
        assert done.wait(10)

    def close(self) -> None:
        # Disconnect first: it wakes the network thread, so loop_stop() returns at once.
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.mqtt
def test_example_acl_write_rights(acl_broker: int) -> None:
    base = "treadctl/lane-1"
    expected = {
        "homeassistant": {"cmd/stop", "cmd/estop"},
        "staff-tablet": {"cmd/stop", "cmd/estop"},
        "gym-backend": {f"cmd/{c}" for c in COMMAND_SUFFIXES},
        "treadctl-daemon": {"status", "state", "telemetry", "event"},
    }
    probes = {f"cmd/{c}" for c in COMMAND_SUFFIXES} | {"status", "state", "telemetry", "event"}
    for user, allowed in expected.items():
        client = _Client(acl_broker, user)
        try:
            granted = {p for p in probes if client.may_publish(f"{base}/{p}")}
            assert granted == allowed, user
            # '+' covers the gym-wide level: whoever may e-stop one lane may e-stop all.
            assert client.may_publish("treadctl/all/cmd/estop") == ("cmd/estop" in allowed)
        finally:
            client.close()
    # Discovery: only the daemon publishes configs; Home Assistant only its birth message.
    daemon = _Client(acl_broker, "treadctl-daemon")
    ha = _Client(acl_broker, "homeassistant")
    try:
        topic, _ = discovery_messages("lane-1", programs=["x"])[0]
        assert daemon.may_publish(topic)
        assert not ha.may_publish(topic)
        assert ha.may_publish(birth_topic())
    finally:
        daemon.close()
        ha.close()


@pytest.mark.mqtt
def test_example_acl_read_rights(acl_broker: int) -> None:
    backend = _Client(acl_broker, "gym-backend")
    daemon = _Client(acl_broker, "treadctl-daemon")
    readers = {user: _Client(acl_broker, user) for user in ("homeassistant", "staff-tablet")}
    try:
        for client in (*readers.values(), daemon):
            client.subscribe("treadctl/#")
        readers["homeassistant"].subscribe("homeassistant/#")
        # The daemon publishes read-outs and discovery, the back-end a command; the
        # daemon's status message goes last as the marker everyone may read.
        discovery_topic, _ = discovery_messages("lane-1", programs=["x"])[0]
        for topic in ("treadctl/lane-1/telemetry", "treadctl/lane-1/state", discovery_topic):
            assert daemon.may_publish(topic)
        assert backend.may_publish("treadctl/lane-1/cmd/start")
        assert daemon.may_publish("treadctl/lane-1/status")

        def seen(client: _Client) -> set[str]:
            topics: set[str] = set()
            while "treadctl/lane-1/status" not in topics:
                topics.add(client.received.get(timeout=10))
            return topics

        assert seen(readers["homeassistant"]) >= {
            "treadctl/lane-1/telemetry",
            "treadctl/lane-1/state",
            discovery_topic,
        }
        tablet = seen(readers["staff-tablet"])
        assert "treadctl/lane-1/state" in tablet
        assert "treadctl/lane-1/telemetry" not in tablet
        assert "treadctl/lane-1/cmd/start" not in tablet
        # The daemon receives commands.
        got: set[str] = set()
        while "treadctl/lane-1/cmd/start" not in got:
            got.add(daemon.received.get(timeout=10))
    finally:
        for client in (backend, daemon, *readers.values()):
            client.close()


# --------------------------------------------------------------------------- in the daemon


async def test_daemon_uses_the_configured_node_id_and_answers_ha_birth(
        mosquitto: Any, tmp_path: Path) -> None:
    from daemon_helpers import Probe, make_config, running_daemon

    config = make_config(mosquitto, tmp_path, extra={
        "homeassistant": {"enabled": True, "node_id": "gym-north"}})
    assert config.homeassistant.node_id == "gym-north"
    async with Probe(mosquitto.port, filters=("homeassistant/#", "treadctl/#")) as probe, \
            running_daemon(config):
        first = await probe.wait_for(
            lambda m: m.topic.startswith("homeassistant/") and m.topic.endswith("/config")
            and "/gym-north/" in m.topic and m.payload != b"", what="discovery")
        # node_id is fixed config, not the (random, per-test) MQTT client id.
        assert config.mqtt.client_id not in first.topic
        mark = probe.mark()
        await probe.send("homeassistant/status", "online")  # Home Assistant restarted
        await probe.wait_for(lambda m: m.topic == first.topic, since=mark,
                             what="discovery republished after HA birth")


async def test_discovery_errors_never_take_a_lane_down(
        mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon_helpers import Probe, make_config, running_daemon

    import treadctl.daemon.discovery as discovery

    def refuse(*args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        raise ValueError("program name cannot be templated")

    monkeypatch.setattr(discovery, "discovery_messages", refuse)
    config = make_config(mosquitto, tmp_path, extra={"homeassistant": {"enabled": True}})
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        reply = await probe.command("lane-1", "heartbeat")
        assert reply["type"] == "ack"  # the lane is up and serving commands
        await probe.send("treadctl/lane-1/cmd/estop", b"")
        ctrl = daemon.lanes["lane-1"].controller
        assert ctrl is not None
        await probe.state("lane-1", lambda s: s["state"] == "estopped")
