"""``treadctl sim --profile NAME`` speaks the profile's own protocol (real process, raw bytes)."""

from __future__ import annotations

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


def test_run_refuses_a_native_profile_until_the_controller_drives_it() -> None:
    # FTMS frames must never go to a Biodex/Woodway/Bertec/TrackMaster machine.
    proc = subprocess.run(
        [sys.executable, "-m", "treadctl", "run", "quick-demo", "--profile", "biodex-rtm400",
         "--device", "sim://"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # bad usage, nothing moved
    assert "speaks the biodex protocol, not FTMS" in proc.stderr
