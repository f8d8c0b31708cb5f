"""``treadctl sim --profile NAME`` speaks the profile's own protocol (real process, raw bytes)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

from treadctl.protocols import bertec


def test_sim_speaks_trackmaster_bytes_over_tcp_and_exits_0_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadctl", "sim", "--profile", "trackmaster-tmx428",
         "--listen", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"\xc0")  # belt status
            assert s.recv(16) == b"\xd0\x31"  # stopped
            s.sendall(b"\x99")  # not a TrackMaster command
            assert s.recv(16) == b"\xbf"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_sim_bertec_pushes_feedback_without_being_asked() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadctl", "sim", "--profile", "bertec-treadmill",
         "--listen", "tcp://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        host, port = proc.stdout.readline().strip().removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.settimeout(10)
            data = b""
            while len(data) < 64:
                data += s.recv(64)
        assert bertec.feedback_decoder().feed(data)[:2] == [bertec.Feedback(0, 0)] * 2
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_ftms_only_options_are_refused_for_a_native_profile() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "treadctl", "sim", "--profile", "biodex-rtm400",
         "--quirks", "step-count", "--pty"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "FTMS only" in proc.stderr


def test_run_drives_a_native_profile_on_its_in_process_personality() -> None:
    # sim:// with a native profile: the controller drives the Biodex driver, which speaks
    # Biodex bytes to the simulator personality in the same process (no FTMS anywhere).
    proc = subprocess.run(
        [sys.executable, "-m", "treadctl", "run", "quick-demo", "--profile", "biodex-rtm400",
         "--device", "sim://", "--speedup", "max", "--json", "--no-record"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = rows[-1]
    assert summary["outcome"] == "finished" and summary["belt_stopped"] is True
    assert any(r.get("direction") == "reverse" and (r.get("speed_kmh") or 0) > 0.3
               for r in rows)


def test_run_refuses_bluetooth_and_speedup_on_a_native_link() -> None:
    for extra, needle in (
        (["--device", "ble://AA:BB:CC:DD:EE:FF"], "not Bluetooth"),
        (["--device", "tcp://127.0.0.1:9", "--speedup", "10"], "real time"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "treadctl", "run", "quick-demo", "--profile",
             "woodway-serial", *extra],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr and "nothing moved" not in proc.stdout
