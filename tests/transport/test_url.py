"""Device URL parsing (docs/transports.md): every valid form and every error, one line each."""

from __future__ import annotations

import pytest

from treadctl.transport.url import DEFAULT_BAUD, DeviceURLError, parse_device_url


def test_sim_plain() -> None:
    u = parse_device_url("sim://")
    assert u.scheme == "sim"
    assert (u.profile, u.speedup, u.faults, u.seed) == (None, None, None, 0)
    assert u.params == ()


def test_sim_with_query() -> None:
    u = parse_device_url("sim://?profile=kinetic-rx2&speedup=60&faults=link-drop@30&seed=7")
    assert u.profile == "kinetic-rx2"
    assert u.speedup == 60.0
    assert u.faults == "link-drop@30"
    assert u.seed == 7
    assert u.param("speedup") == "60"
    assert dict(u.params)["faults"] == "link-drop@30"


def test_sim_multiple_faults_url_encoded() -> None:
    u = parse_device_url("sim://?faults=garbage%4010,stuck-belt@20")
    assert u.faults == "garbage@10,stuck-belt@20"


def test_ble_address_normalised() -> None:
    u = parse_device_url("ble://aa:bb:cc:dd:ee:0f")
    assert u.scheme == "ble"
    assert u.ble_address == "AA:BB:CC:DD:EE:0F"
    assert u.ble_name_prefix is None
    assert u.endpoint == "ble://AA:BB:CC:DD:EE:0F"


def test_ble_name_prefix() -> None:
    u = parse_device_url("ble://name=KS-ST%20A1")
    assert u.ble_name_prefix == "KS-ST A1"
    assert u.ble_address is None


def test_ble_corebluetooth_uuid() -> None:
    u = parse_device_url("ble://12345678-1234-1234-1234-123456789ABC?timeout=5")
    assert u.ble_address == "12345678-1234-1234-1234-123456789ABC"
    assert u.timeout_s == 5.0


def test_serial() -> None:
    u = parse_device_url("serial:///dev/ttyUSB0?baud=115200")
    assert (u.scheme, u.serial_path, u.baud) == ("serial", "/dev/ttyUSB0", 115200)
    assert parse_device_url("serial:///dev/pts/3").baud == DEFAULT_BAUD
    assert parse_device_url("serial:///dev/ttyACM0?baud=9600").baud == 9600


def test_tcp() -> None:
    u = parse_device_url("tcp://127.0.0.1:5000")
    assert (u.scheme, u.host, u.port) == ("tcp", "127.0.0.1", 5000)
    assert u.endpoint == "tcp://127.0.0.1:5000"
    v = parse_device_url("tcp://[::1]:6000?timeout=2.5")
    assert (v.host, v.port, v.timeout_s) == ("::1", 6000, 2.5)
    assert v.endpoint == "tcp://[::1]:6000"
    assert parse_device_url("TCP://gym-bridge.local:7000/").host == "gym-bridge.local"


def test_frozen_and_str() -> None:
    u = parse_device_url("tcp://h:1")
    with pytest.raises(AttributeError):
        u.port = 2  # type: ignore[misc]
    assert str(u) == "tcp://h:1"
    assert hash(u) == hash(parse_device_url("tcp://h:1"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("tcp", "expected tcp://"),
        ("/dev/ttyUSB0", "expected SCHEME://"),
        ("http://x:1", "unknown scheme 'http'"),
        ("tcp://x", "missing port"),
        ("tcp://:5000", "missing host"),
        ("tcp://x:0", "bad port 0"),
        ("tcp://x:99999", "bad port"),
        ("tcp://x:port", "bad port"),
        ("tcp://x:1/path", "no path"),
        ("tcp://x:1?baud=9600", "unknown query parameter 'baud'"),
        ("tcp://x:1?timeout=-1", "timeout must be a positive number"),
        ("serial:///dev/ttyUSB0?baud=fast", "bad baud 'fast'"),
        ("serial:///dev/ttyUSB0?baud=0", "bad baud 0"),
        ("serial:///dev/ttyUSB0?baud=115200&baud=9600", "given twice"),
        ("serial:///dev/ttyUSB0?speed=1", "unknown query parameter 'speed'"),
        ("serial://dev/ttyUSB0", "three slashes"),
        ("serial:///", "missing serial device path"),
        ("ble://", "missing address"),
        ("ble://AA:BB:CC:DD:EE", "bad MAC"),
        ("ble://AA:BB:CC:DD:EE:GG", "bad MAC"),
        ("ble://name=", "empty name prefix"),
        ("ble://AA:BB:CC:DD:EE:FF?baud=1", "unknown query parameter"),
        ("sim://localhost", "takes no host"),
        ("sim://?profile=", "bad profile name"),
        ("sim://?profile=../etc", "bad profile name"),
        ("sim://?speedup=0", "speedup must be a positive number"),
        ("sim://?speedup=inf", "speedup must be a positive number"),
        ("sim://?speedup=x", "speedup must be a number"),
        ("sim://?seed=x", "seed must be an integer"),
        ("sim://?seed=-1", "seed must be >= 0"),
        ("sim://?colour=red", "unknown query parameter 'colour'"),
        ("sim://?profile", "malformed query"),
        ("sim://#frag", "fragments"),
    ],
)
def test_errors_are_one_line_naming_the_url(url: str, reason: str) -> None:
    with pytest.raises(DeviceURLError) as info:
        parse_device_url(url)
    msg = str(info.value)
    assert msg.startswith(f"bad device URL {url!r}: ")
    assert reason in msg
    assert "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_plus_in_fault_spec_is_literal() -> None:
    assert parse_device_url("sim://?faults=link-drop@60+5").faults == "link-drop@60+5"


def test_bad_fault_spec_is_rejected_by_the_simulator_parser() -> None:
    with pytest.raises(DeviceURLError, match=r"^bad device URL .*: faults: unknown fault 'melt'"):
        parse_device_url("sim://?faults=melt@3")
