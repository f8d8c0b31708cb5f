"""Native protocols (issue 17), in one run, each over a real pty:

1. **through the controller**: fault seen -> stop command on the wire, p50/p99, for each
   native protocol, next to FTMS: a ``Controller`` (``treadctl.control.controller``) runs
   a session on ``open_transport("serial://PTY", profile=...)`` -- DriverLink over the
   native driver, or the FTMS client over its framing -- and the machine's end of the pty
   is the simulator personality (FTMS: the firmware model) in this process. Once the belt
   cruises at 1 km/h the machine's next speed report says 9 km/h (the same fault on every
   protocol: overspeed telemetry). t0: just before those bytes are written to the master;
   t1: when the machine end has read and decoded the stop. The controller's own latch time
   (its ``estop`` event) is reported alongside;
2. **driver only** (the driver's danger latch, no controller), as below;
3. **SIGKILL of ``treadctl run`` mid-reverse** (mid-run on forward-only TrackMaster), for
   every protocol whose machine has its own watchdog (``wire.watchdog_ms`` > 0): the
   simulator's watchdog fires that long after the last host byte, and the belt stands
   within the stop distance after it (from the simulator's event lines, real time).

Driver only:

Each trial opens a pty pair in this process: the driver (or, for FTMS, the controller on a
framed link) opens the slave with pyserial like a serial port, and the machine's end on the
master is the simulator personality (FTMS: a minimal firmware answering writes). The fault
is the first reply that shows danger:

* biodex: the ``A7`` status reply with the lanyard bit -> ``81`` stop;
* woodway: a ``D1`` read-back with the belt running the other way -> ``AA`` auto stop;
* trackmaster: a ``D0`` belt status "running, CDS off" -> ``A2`` stop;
* bertec: a feedback record whose belts differ -> a 0 mm/s setpoint;
* ftms (baseline): the FTMS client on its framing over a pty; a Treadmill Data
  notification at 9 km/h reaches ``on_telemetry``, which calls ``stop_now`` -> Stop opcode
  (the same layer as a driver's latch; the controller's interlocks sit above both).

t0 is taken just before the fault bytes are written to the master, t1 when the machine end
has read and decoded the stop: both ends are in this process (perf_counter), so the pty's
two kernel hops are inside the number, as they are on a real serial port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treadctl import clock, ftms
from treadctl.drivers import make_driver
from treadctl.profiles import load_profile
from treadctl.protocols import bertec, biodex, trackmaster, woodway
from treadctl.simulator.link import PtyByteStream
from treadctl.simulator.personalities import make_personality, serve_stream
from treadctl.transport.serial import open_serial_stream

NATIVE = {
    "biodex": ("biodex-rtm400", 0xA7, biodex.encode_reply(biodex.Status(0, biodex.SYS_LANYARD))),
    "woodway": ("woodway-serial", 0xD1, woodway.encode_reply(woodway.Speed(20, reverse=True))),
    "trackmaster": ("trackmaster-tmx428", 0xD0,
                    trackmaster.encode_reply(trackmaster.BeltStatus(0x33))),
    "bertec": ("bertec-treadmill", 0x00, bertec.encode_feedback(bertec.Feedback(800, 200))),
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    tty.setraw(master, termios.TCSANOW)
    return master, slave, os.ttyname(slave)


def _is_stop(protocol: str, msg: Any) -> bool:
    if protocol == "biodex":
        return msg == biodex.Command(biodex.Code.STOP)
    if protocol == "woodway":
        return msg == woodway.Command(woodway.Code.AUTO_STOP)
    if protocol == "trackmaster":
        return msg == trackmaster.Command(trackmaster.Code.STOP)
    return isinstance(msg, bertec.Command) and msg.speed_right == 0 and msg.speed_left == 0


async def _native_trial(protocol: str) -> float:
    name, lead, fault = NATIVE[protocol]
    profile = load_profile(name)
    master, slave, path = _pty()
    machine = make_personality(profile)
    stream = PtyByteStream(master)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(machine.run()), loop.create_task(serve_stream(machine, stream))]
    armed = False
    t0 = t1 = 0.0
    done = loop.create_future()
    send, execute = machine.send, machine.execute  # type: ignore[attr-defined]

    def send_hook(data: bytes) -> None:
        nonlocal armed, t0
        if armed and data and data[0] == lead and (protocol != "bertec" or len(data) == 32):
            armed = False
            t0 = time.perf_counter()
            send(fault)
            return
        send(data)

    def execute_hook(msg: Any) -> None:
        nonlocal t1
        if t0 and not done.done() and _is_stop(protocol, msg):
            t1 = time.perf_counter()
            done.set_result(None)
        execute(msg)

    machine.send = send_hook  # type: ignore[method-assign]
    machine.execute = execute_hook  # type: ignore[attr-defined]
    driver = make_driver(f"serial://{path}", profile)
    try:
        await driver.connect()
        await driver.start()
        await driver.set_speed(3.0)
        armed = True
        async with asyncio.timeout(10):
            await done
        return t1 - t0
    finally:
        await driver.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stream.close()
        os.close(master)
        os.close(slave)


async def _ftms_trials(trials: int) -> list[float]:
    """The FTMS client over its framing on a pty: a Treadmill Data notification showing
    danger reaches ``on_telemetry``, which calls ``stop_now`` - the same layer as a native
    driver's danger latch (the controller's interlocks sit above both)."""
    from treadctl.control.client import FTMSClient
    from treadctl.transport.framed import FramedTransport
    from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame

    profile = load_profile("treadctl-reference")
    master, slave, path = _pty()
    host = open_serial_stream(path, 115200)
    device = PtyByteStream(master)

    async def ready() -> Any:
        return host

    transport = FramedTransport(ready, "bench-pty")
    client = FTMSClient(transport, profile, clock.LoopClock())
    client.on_telemetry = lambda td: client.stop_now() if (td.speed_kmh or 0) > 6 else None
    await transport.connect()
    transport.set_notify_handler(client.on_notification)
    stop = ftms.encode_control_point(ftms.StopOrPause(pause=False))
    fast = encode_frame(Frame(FrameType.NOTIFY, ftms.TREADMILL_DATA,
                              ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=9.0))))
    decoder = FrameDecoder()
    out: list[float] = []
    try:
        for _ in range(trials):
            t0 = time.perf_counter()
            device.write(fast)
            t1 = None
            async with asyncio.timeout(10):
                while t1 is None:
                    for frame in decoder.feed(await device.read()):
                        if frame.type is FrameType.WRITE:
                            device.write(encode_frame(Frame(FrameType.WRITE_RESPONSE, frame.uuid,
                                                            b"\x00", frame.seq)))
                            if frame.value == stop and t1 is None:
                                t1 = time.perf_counter()
            out.append(t1 - t0)
            await asyncio.sleep(0.01)
    finally:
        await transport.close()
        device.close()
        os.close(master)
        os.close(slave)
    return out


def _driver_rows(quick: bool) -> list[dict[str, Any]]:
    trials = 20 if quick else 100
    samples: dict[str, list[float]] = {}
    for protocol in NATIVE:
        samples[protocol] = [clock.run(_native_trial(protocol)) for _ in range(trials)]
    try:
        samples["ftms"] = clock.run(_ftms_trials(trials))
        ftms_note = "FTMS client: notification -> on_telemetry -> stop_now, framing on a pty"
    except Exception as exc:  # the control core is being refactored: report, don't hide
        ftms_note = f"FTMS baseline not measured: {type(exc).__name__}: {exc}"
    base = _pct(samples["ftms"], 0.99) if "ftms" in samples else None
    results: list[dict[str, Any]] = []
    for protocol, values in samples.items():
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            ms = _pct(values, q) * 1000
            result: dict[str, Any] = {
                "name": f"{protocol}: {'client' if protocol == 'ftms' else 'driver'} only:"
                        f" fault seen -> stop on the wire {label} (pty)",
                "value": round(ms, 3), "unit": "ms",
                "note": f"{len(values)} trials" + ("; " + ftms_note if protocol == "ftms" else
                                                   "; driver danger latch"),
            }
            if label == "p99" and base and protocol != "ftms":
                result["baseline"] = round(base * 1000, 3)
                result["ratio"] = round(_pct(values, 0.99) / base, 2)
            results.append(result)
    if "ftms" not in samples:
        results.append({"name": "ftms: client only: fault seen -> stop (pty)", "value": None,
                        "unit": "ms", "note": ftms_note})
    return results


# ====================================================================== through the controller
#: Both ends share this process's loop, so physics and timeouts scale alike; but an ack
#: timeout of 300 ms is 60 ms of real time at 5x, and at 20x a loaded machine tripped
#: (command-timeout) before the fault. The latency itself is real time (perf_counter).
CTL_SPEEDUP = 5.0
FAST_KMH = 9.0
CRUISE_KMH = 1.0  # a short ramp per trial (each trial trips, is reset and starts again)


def _fast_reply(protocol: str, profile: Any) -> tuple[Callable[[bytes], bool], bytes]:
    """(is this the machine's speed report?, the same report at FAST_KMH)."""
    steps = round(FAST_KMH / (0.1 * 1.609344))  # every mph machine: 0.1 mph steps
    if protocol == "biodex":
        lead = biodex.expected_reply(biodex.Read(biodex.Request.SPEED))
        fast = biodex.encode_reply(biodex.Value(biodex.Request.SPEED, steps))
        return (lambda d: d[:1] == bytes([lead])), fast
    if protocol == "woodway":
        return (lambda d: d[:1] == b"\xd1"), woodway.encode_reply(woodway.Speed(steps, False))
    if protocol == "trackmaster":
        lead = int(trackmaster.Status.ACTUAL_SPEED) + 0x10
        fast = trackmaster.encode_reply(trackmaster.Value(trackmaster.Status.ACTUAL_SPEED, steps))
        return (lambda d: d[:1] == bytes([lead])), fast
    mm_s = round(FAST_KMH / 3.6 * 1000)
    return (lambda d: len(d) == 32), bertec.encode_feedback(bertec.Feedback(mm_s, mm_s))


async def _controller_trials(
    protocol: str, trials: int
) -> tuple[list[float], list[float], list[str], list[str]]:
    """(fault -> stop bytes decoded at the machine, fault -> controller latched, in
    seconds; the interlocks that latched; why trials tripped before their fault)."""
    from treadctl.control.controller import Controller
    from treadctl.programs.model import program_from_dict
    from treadctl.simulator.firmware import SimTreadmill
    from treadctl.simulator.link import serve_stream as serve_ftms
    from treadctl.transport import open_transport

    name = "treadctl-reference" if protocol == "ftms" else NATIVE[protocol][0]
    profile = load_profile(name)
    master, slave, path = _pty()
    device = PtyByteStream(master)
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"armed": False, "t0": 0.0, "t1": 0.0, "latched": 0.0}
    done: list[asyncio.Future[None]] = []

    def stop_seen() -> None:
        if state["t0"] and not state["t1"]:
            state["t1"] = time.perf_counter()
            if done and not done[-1].done():
                done[-1].set_result(None)

    if protocol == "ftms":
        sim = SimTreadmill(profile)
        tasks = [loop.create_task(sim.run()), loop.create_task(serve_ftms(sim, device))]
        handle_write = sim.handle_write

        def write_hook(uuid: int, value: bytes) -> int:
            if uuid == ftms.CONTROL_POINT and value[:2] == b"\x08\x01":
                stop_seen()
            return handle_write(uuid, value)

        sim.handle_write = write_hook  # type: ignore[method-assign]
        fast_td = ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=FAST_KMH))

        def inject() -> None:
            notify = sim._notify
            assert notify is not None
            state["t0"] = time.perf_counter()
            notify(ftms.TREADMILL_DATA, fast_td)
    else:
        machine = make_personality(profile)
        tasks = [loop.create_task(machine.run()), loop.create_task(serve_stream(machine, device))]
        is_speed, fast = _fast_reply(protocol, profile)
        send, execute = machine.send, machine.execute  # type: ignore[attr-defined]

        def send_hook(data: bytes) -> None:
            if state["armed"] and is_speed(data):
                state["armed"] = False
                state["t0"] = time.perf_counter()
                data = fast
            send(data)

        def execute_hook(msg: Any) -> None:
            if _is_stop(protocol, msg):
                stop_seen()
            execute(msg)

        machine.send = send_hook  # type: ignore[method-assign]
        machine.execute = execute_hook  # type: ignore[attr-defined]

        def inject() -> None:
            state["armed"] = True  # the next speed report carries the fault

    transport = open_transport(f"serial://{path}", profile=profile)
    ctl = Controller(transport, profile)
    interlocks: set[str] = set()

    def on_event(e: dict[str, Any]) -> None:
        if e["type"] == "estop":
            state["latched"] = time.perf_counter()
            interlocks.add(str(e["interlock"]))

    ctl.event_listeners.append(on_event)
    program = program_from_dict({"name": "bench", "segment": [
        {"duration_s": 600, "speed_kmh": CRUISE_KMH, "direction": "forward"}]})  # fmt: skip
    wire: list[float] = []
    latch: list[float] = []
    lost: list[str] = []  # trials that tripped before the fault (reported, then redone)
    try:
        await ctl.open()
        while len(wire) < trials:
            if len(lost) > trials:
                raise RuntimeError(f"{len(lost)} trials tripped before the fault: {lost[-3:]}")
            state.update(armed=False, t0=0.0, t1=0.0, latched=0.0)
            session = ctl.start(program)
            cruising = await clock.wait_until(
                lambda: ctl.snapshot.state.value == "running"
                and abs(ctl.measured_kmh - CRUISE_KMH) < 0.15, 30)
            if not cruising or ctl.latch.latched:
                lost.append(str(ctl.snapshot.reason))
                with contextlib.suppress(BaseException):
                    await session
                await ctl.wait_stopped(30)
                await asyncio.sleep(0.5)
                ctl.reset("bench: a trial tripped before its fault")
                continue
            await asyncio.sleep(0.3)  # off the last setpoint's reply
            done.append(loop.create_future())
            inject()
            async with asyncio.timeout(30):
                await done[-1]
                await session
            wire.append(state["t1"] - state["t0"])
            if state["latched"]:
                latch.append(state["latched"] - state["t0"])
            await ctl.wait_stopped(30)
            await asyncio.sleep(0.2)
            ctl.reset("bench")
    finally:
        await ctl.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        device.close()
        os.close(master)
        os.close(slave)
    return wire, latch, sorted(interlocks), lost


def _controller_rows(trials: int) -> list[dict[str, Any]]:
    samples: dict[str, tuple[list[float], list[float], list[str], list[str]]] = {}
    errors: dict[str, str] = {}
    for protocol in ("ftms", *NATIVE):
        try:
            samples[protocol] = clock.run(_controller_trials(protocol, trials),
                                          speedup=CTL_SPEEDUP)
        except Exception as exc:  # report, never hide
            errors[protocol] = f"{type(exc).__name__}: {exc}"
    base = _pct(samples["ftms"][0], 0.99) if "ftms" in samples else None
    rows: list[dict[str, Any]] = []
    for protocol in ("ftms", *NATIVE):
        if protocol in errors:
            rows.append({"name": f"{protocol}: controller: fault -> stop (pty)", "value": None,
                         "unit": "ms", "note": f"not measured: {errors[protocol]}"})
            continue
        wire, latch, interlocks, lost = samples[protocol]
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            row: dict[str, Any] = {
                "name": f"{protocol}: controller: fault seen -> stop on the wire {label} (pty)",
                "value": round(_pct(wire, q) * 1000, 3), "unit": "ms",
                "note": f"{len(wire)} trials; overspeed telemetry ({FAST_KMH:g} km/h at"
                        f" {CRUISE_KMH:g})"
                        f" latched {'/'.join(interlocks)}; fault -> controller latched {label}"
                        f" {_pct(latch, q) * 1000:.3f} ms"
                        + (f"; {len(lost)} trials tripped before the fault and were redone"
                           f" ({lost[0]})" if lost else ""),
            }
            if label == "p99" and base and protocol != "ftms":
                row["baseline"] = round(base * 1000, 3)
                row["ratio"] = round(_pct(wire, 0.99) / base, 2)
            rows.append(row)
    return rows


# ====================================================================== SIGKILL mid-reverse
def _sigkill_trial(name: str, workdir: Path) -> dict[str, float]:
    """``treadctl run`` (its own process, real time: a native link has no clock query) on
    ``treadctl sim --pty`` (its own process); SIGKILL once the belt runs at 2 km/h
    (backward where the machine can); the simulator's lines tell what its watchdog did."""
    profile = load_profile(name)
    direction = "reverse" if profile.supports_reverse else "forward"
    prog = workdir / f"kill-{name}.toml"
    prog.write_text(f'name = "kill"\n[[segment]]\nduration_s = 300\nspeed_kmh = 2.0\n'
                    f'direction = "{direction}"\n')
    env = dict(os.environ, TREADCTL_SIM_EVENTS="1")
    sim = subprocess.Popen([sys.executable, "-m", "treadctl", "sim", "--profile", name, "--pty"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    host: subprocess.Popen[str] | None = None
    try:
        assert sim.stdout is not None
        path = sim.stdout.readline().strip()
        host = subprocess.Popen(
            [sys.executable, "-m", "treadctl", "run", str(prog), "--profile", name,
             "--device", f"serial://{path}", "--json", "--no-record"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert host.stdout is not None
        deadline = time.monotonic() + 60
        for line in host.stdout:
            row = json.loads(line) if line.startswith("{") else {}
            if (row.get("speed_kmh") or 0) >= 1.8 and row.get("direction") == direction:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: the belt never reached 2 km/h {direction}")
        host.kill()  # SIGKILL: no stop, no goodbye
        host.wait(timeout=10)
        trip = still = None
        for line in sim.stdout:
            e = json.loads(line)
            if e["event"] == "watchdog-expired" and trip is None:
                trip = e
            if trip is not None and e["event"] == "standstill":
                still = e
                break
        assert trip is not None and still is not None
        return {"watchdog_s": trip["t"] - trip["last_rx_s"],
                "stand_s": still["at_s"] - trip["last_rx_s"],
                "speed_kmh": abs(trip["speed_kmh"]),
                "reverse": float(trip["direction"] == "reverse")}
    finally:
        for proc in (host, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _sigkill_rows(trials: int) -> list[dict[str, Any]]:
    import tempfile

    rows: list[dict[str, Any]] = []
    names = [n for n, *_ in NATIVE.values() if load_profile(n).wire.watchdog_ms > 0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            profile = load_profile(name)
            watchdog_s = profile.wire.watchdog_ms / 1000
            try:
                runs = [_sigkill_trial(name, Path(tmp)) for _ in range(trials)]
            except Exception as exc:
                rows.append({"name": f"{name}: SIGKILL -> belt standing", "value": None,
                             "unit": "s", "note": f"not measured: {type(exc).__name__}: {exc}"})
                continue
            worst = max(r["stand_s"] for r in runs)
            # The bound: the watchdog's period, then a stop from the speed at the trip at
            # the machine's stop deceleration (what the physics does after the trip).
            bound = watchdog_s + max(r["speed_kmh"] for r in runs) / 3.6 / (
                profile.motion.stop_decel_mps2) + 0.05
            backward = all(r["reverse"] for r in runs)
            rows.append({
                "name": f"{name}: SIGKILL of treadctl run -> watchdog fired (max)",
                "value": round(max(r["watchdog_s"] for r in runs) * 1000, 1), "unit": "ms",
                "target": f"{profile.wire.watchdog_ms} ms (+20 ms timer slack) after the last"
                          " host byte",
                "met": max(r["watchdog_s"] for r in runs) <= watchdog_s + 0.02,
                "note": f"{trials} trials, belt running "
                        f"{'backward' if backward else 'forward'} at the kill",
            })
            rows.append({
                "name": f"{name}: SIGKILL of treadctl run -> belt standing (max)",
                "value": round(worst, 3), "unit": "s",
                "target": f"<= {bound:.2f} s after the last host byte", "met": worst <= bound,
                "note": "watchdog period + the machine's stop at stop_decel_mps2 (sim physics)",
            })
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    # Every trial latches a danger on purpose: its warnings are not news here.
    for name in ("treadctl.drivers", "treadctl.control"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    rows = _controller_rows(10 if quick else 100)
    rows += _driver_rows(quick)
    rows += _sigkill_rows(1 if quick else 3)
    return rows
