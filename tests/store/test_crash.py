"""Crash safety: a real recorder in another process is SIGKILLed mid-session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from treadctl.store.db import SessionStore
from treadctl.store.model import Outcome

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_mid_session_loses_at_most_the_last_second(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    try:
        first = child.stdout.readline().split()
        assert first[0] == "session", first
        session_id = first[1]
        reported: list[tuple[int, float]] = []
        # Read what the child says it recorded until 2.5 s of session time have passed.
        for line in child.stdout:
            i, t_s = line.split()
            reported.append((int(i), float(t_s)))
            if float(t_s) >= 2.5:
                break
        child.send_signal(signal.SIGKILL)
        # Lines the child wrote before dying were recorded too: read them as well.
        for line in child.stdout:
            i, t_s = line.split()
            reported.append((int(i), float(t_s)))
    finally:
        child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    last_t = reported[-1][1]

    with SessionStore(db) as store:
        assert store.integrity_check() == "ok"
        info = store.get_session(session_id)
        assert info.outcome is Outcome.RUNNING  # nobody finished it
        samples = store.samples(session_id)
        # Everything reported up to 1 s before the last report survived, as a gap-free prefix.
        must_have = sum(1 for _, t in reported if t <= last_t - 1.0)
        assert must_have > 50
        assert len(samples) >= must_have, (len(samples), must_have, last_t)
        assert len(samples) <= len(reported)
        for s, (_, t) in zip(samples, reported, strict=False):
            assert abs(s.t_s - t) < 1e-5
        assert store.events(session_id)[0].type == "segment"

        aborted = store.mark_running_as_aborted("recorder was killed")
        assert aborted == [session_id]
        info = store.get_session(session_id)
        assert info.outcome is Outcome.ABORTED
        assert info.sample_count == len(samples)
        assert info.summary is not None and info.summary["reverse_distance_m"] > 0
