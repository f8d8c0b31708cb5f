"""Child process for the crash test: records samples in (scaled-down) real time with the real
recorder and reports each recorded ``t_s`` on stdout until it is SIGKILLed."""

from __future__ import annotations

import sys
import time

from treadctl.store.db import SessionStore
from treadctl.store.model import Event, Sample, SessionMeta
from treadctl.store.recorder import SessionRecorder
from treadctl.types import Direction


def main() -> None:
    store = SessionStore(sys.argv[1])
    rec = SessionRecorder.start(store, SessionMeta(treadmill_id="crash", program_name="crash"))
    print(f"session {rec.session_id}", flush=True)
    t0 = time.monotonic()
    i = 0
    while True:
        # Session time = real elapsed time, so "the last second" means the same in both.
        t_s = time.monotonic() - t0
        direction = Direction.REVERSE if int(t_s) % 2 else Direction.FORWARD
        rec.record_sample(
            Sample(t_s=t_s, speed_kmh=3.0, direction=direction, distance_m=t_s, segment=i // 50)
        )
        if i % 50 == 0:
            rec.record_event(Event(t_s=t_s, type="segment", data={"index": i // 50}))
        print(f"{i} {t_s:.6f}", flush=True)
        i += 1
        time.sleep(0.01)  # a 100 Hz control loop


if __name__ == "__main__":
    main()
