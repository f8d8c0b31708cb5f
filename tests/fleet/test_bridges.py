"""Several sites under one view: real mosquitto processes (a central broker and two site
brokers bridged to it with the shipped configs, docs/examples/fleet/), a real
``treadctl daemon`` per site. Judged from what each broker delivers."""

from __future__ import annotations

from typing import Any

from daemon_helpers import Probe

START = {"program": "forward-warmup-cooldown"}
GYM_LEVEL = "/".join(("treadctl", "all", ""))  # the gym-wide topic level, any command


def central_probe(fleet: Any, user: str = "fleet-dashboard", filters: tuple[str, ...] = (
        "+/treadctl/+/status", "+/treadctl/+/state", "+/treadctl/+/event",
        "+/treadctl/+/telemetry", "fleet/+/bridge")) -> Probe:
    return Probe(fleet.central.port, filters, username=user, password=fleet.passwords[user])


def site_probe(fleet: Any, site: str) -> Probe:
    return Probe(fleet.sites[site].broker.port, ("treadctl/#",))


def is_state(topic: str, pred: Any) -> Any:
    return lambda m: m.topic == topic and m.payload and pred(m.json)


def last_state(probe: Probe, topic: str) -> dict[str, Any]:
    return dict([m for m in probe.messages if m.topic == topic and m.payload][-1].json)


async def wait_fleet_up(central: Probe) -> None:
    for site in ("site-a", "site-b"):
        await central.wait_for(lambda m, s=site: m.topic == f"fleet/{s}/bridge"
                               and m.payload == b"1", 20, what=f"{site} bridge up")
        for lane in ("lane-1", "lane-2"):
            await central.wait_for(is_state(f"{site}/treadctl/{lane}/state",
                                            lambda s: s["state"] == "idle"), 30,
                                   what=f"{site} {lane} idle")


async def test_central_start_telemetry_cut_local_estop_resync(fleet: Any) -> None:
    async with central_probe(fleet) as central, site_probe(fleet, "site-a") as local_a:
        await wait_fleet_up(central)
        # A central client starts a program on a lane of site A; the ack comes back up.
        mark = central.mark()
        await central.send("site-a/treadctl/lane-1/cmd/start", {**START, "request_id": "c1"})
        ack = await central.wait_for(
            lambda m: m.topic == "site-a/treadctl/lane-1/event" and m.json.get(
                "request_id") == "c1", 15, mark, "ack under site-a/")
        assert ack.json["type"] == "ack", ack.json
        # Telemetry arrives under site A's prefix, and only there.
        tel = await central.wait_for(
            lambda m: m.topic == "site-a/treadctl/lane-1/telemetry"
            and m.json["speed_kmh"] > 0.5, 20, mark, "moving telemetry under site-a/")
        assert tel.json["direction"] == "forward"
        assert not any(m.topic.startswith("site-b/treadctl/lane-1/telemetry")
                       and m.json["speed_kmh"] > 0.5 for m in central.messages)

        # Cut site A's bridge: the central broker sees it go (the bridge's Last Will)...
        mark = central.mark()
        await fleet.sites["site-a"].cable.cut()
        await central.wait_for(lambda m: m.topic == "fleet/site-a/bridge" and m.payload == b"0",
                               30, mark, "site-a bridge down")
        # ... and nothing stops at the site: the belt keeps running on its own broker.
        local_mark = local_a.mark()
        moving = 0
        while moving < 8:  # two seconds of telemetry at 4 Hz, all of it moving
            m = await local_a.wait_for(lambda m: m.topic == "treadctl/lane-1/telemetry", 5,
                                       local_mark, "telemetry during the cut")
            local_mark = local_a.messages.index(m) + 1
            assert m.json["speed_kmh"] > 0.5, m.json
            moving += 1
        assert not any(m.topic == "treadctl/lane-1/state" and m.json["state"] != "running"
                       for m in local_a.messages[mark:] if m.payload)
        # Local e-stops still work with the bridge down.
        await local_a.send("treadctl/lane-1/cmd/estop", {"reason": "local button"})
        await local_a.state("lane-1", lambda s: s["state"] == "estopped" and s["latched"],
                            local_mark, 5)

        # Mend the cable: the bridge comes back and the retained state is resynchronised.
        mark = central.mark()
        await fleet.sites["site-a"].cable.mend()
        await central.wait_for(lambda m: m.topic == "fleet/site-a/bridge" and m.payload == b"1",
                               30, mark, "site-a bridge up again")
        st = await central.wait_for(is_state("site-a/treadctl/lane-1/state",
                                             lambda s: s["state"] == "estopped"), 15, mark,
                                    "site-a lane-1 estopped at central")
        assert st.json["latched"] is True
        # A fresh central subscriber gets the same from the retained copy.
        async with central_probe(fleet) as late:
            m = await late.wait_for(lambda m: m.topic == "site-a/treadctl/lane-1/state", 10,
                                    what="retained state")
            assert m.retain and m.json["state"] == "estopped"


async def test_gym_wide_estop_never_crosses_a_bridge(fleet: Any) -> None:
    async with central_probe(fleet) as central, \
            central_probe(fleet, "test-spy", ("#",)) as spy, \
            site_probe(fleet, "site-a") as local_a, site_probe(fleet, "site-b") as local_b:
        await wait_fleet_up(central)
        await central.send("site-a/treadctl/lane-2/cmd/start", {**START, "request_id": "a2"})
        await local_a.state("lane-2", lambda s: s["state"] == "running", 0, 15)

        # Site B's own gym-wide e-stop: all of site B stops...
        mark = central.mark()
        await local_b.send("treadctl/all/cmd/estop", {"reason": "fire alarm at B"})
        for lane in ("lane-1", "lane-2"):
            await central.wait_for(is_state(f"site-b/treadctl/{lane}/state",
                                            lambda s: s["state"] == "estopped"), 10, mark,
                                   f"site-b {lane} estopped (seen centrally)")
        # ... and it never went up (anything B's bridge forwarded before these states would
        # have reached the central broker first, on the same connection) ...
        assert not [m.topic for m in spy.messages if "/all/" in m.topic]
        # ... nor down to site A, whose lane keeps running.
        assert last_state(local_a, "treadctl/lane-2/state")["state"] == "running"
        assert not [m for m in local_a.messages if m.topic.startswith(GYM_LEVEL)]
        assert not any(m.topic == "treadctl/lane-2/state" and m.json["state"] == "estopped"
                       for m in local_a.messages if m.payload)

        # Nobody on the central broker may publish a site's gym-wide topic (ACL deny), and
        # the bridge subscribes it for nobody: refused at the broker, never at site A.
        spy_mark = spy.mark()
        await central.send("site-a/treadctl/all/cmd/estop", {"reason": "from afar"})
        await central.send("site-a/treadctl/lane-2/cmd/set", {"speed_kmh": 4.5,
                                                             "request_id": "marker"})
        await central.wait_for(lambda m: m.topic == "site-a/treadctl/lane-2/event"
                               and m.json.get("request_id") == "marker", 10,
                               what="marker ack after the refused gym-wide e-stop")
        assert not [m.topic for m in spy.messages[spy_mark:] if "/all/" in m.topic]
        assert not [m for m in local_a.messages if m.topic.startswith(GYM_LEVEL)]
        assert last_state(local_a, "treadctl/lane-2/state")["state"] == "running"
