"""The MQTT adapter (treadctl/daemon/mqtt.py and its client, mqtt_client.py) on its own,
against a real mosquitto: the e-stop fast path runs in the socket's read callback and
never reaches ``messages``; ``publish_nowait`` keeps QoS 1 in order; a failed or lost
connection is an ``MqttError`` (and a lost one leaves the Last Will, a clean one does
not); TLS, credentials, MQTT v5 properties and TCP_NODELAY reach the wire."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import TcpCable, make_config, mosquitto_passwd, response_properties, until

from treadctl.daemon import mqtt

pytestmark = pytest.mark.mqtt


def _id() -> str:
    return f"adapter-{uuid.uuid4().hex[:6]}"


async def _next(client: mqtt.Client, within_s: float = 10.0) -> mqtt.Message:
    return await asyncio.wait_for(anext(aiter(client.messages)), within_s)


async def test_fast_path_runs_in_the_read_callback_before_messages(mosquitto: Any) -> None:
    seen: list[tuple[str, bool, bool, int]] = []
    sub = mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id())

    def on_estop(client: Any, userdata: Any, message: Any) -> None:
        # Not in a task (a loop callback: the socket's reader), on the loop's thread, and
        # nothing queued for ``messages`` (the e-stop was published first).
        seen.append((message.topic, asyncio.current_task() is None,
                     threading.current_thread() is threading.main_thread(), len(sub.messages)))

    mqtt.on_topic(sub, "fast/+/estop", on_estop)
    async with sub, mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as pub:
        granted = await mqtt.subscribe(sub, ["fast/#"], qos=1)
        assert [int(getattr(g, "value", g)) for g in granted] == [1]
        await pub.publish("fast/a/estop", b"stop", qos=1)
        await pub.publish("fast/a/other", b"x", qos=1)
        first = await _next(sub)
        # The e-stop never went through the queue: the first queued message is the other.
        assert first.topic.value == "fast/a/other" and first.payload == b"x"
        assert first.topic.matches("fast/+/other") and not first.topic.matches("fast/b/#")
        assert seen == [("fast/a/estop", True, True, 0)]
        await pub.publish("fast/a/estop", b"again", qos=1)
        await pub.publish("fast/a/end", b"", qos=1)
        last = await _next(sub)
        assert last.topic.value == "fast/a/end"
        assert [s[0] for s in seen] == ["fast/a/estop"] * 2


async def test_publish_nowait_keeps_qos1_order(mosquitto: Any) -> None:
    n = 300  # well over paho's 20 in flight: the rest waits in paho, in order
    async with mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as sub, \
            mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as pub:
        await sub.subscribe("order/x", qos=1)
        rcs = [mqtt.publish_nowait(pub, "order/x", str(i).encode(), 1, False, None)
               for i in range(n)]
        assert rcs == [0] * n
        got = []
        for _ in range(n):
            m = await _next(sub)
            assert m.qos == 1 and not m.retain
            got.append(int(m.payload))
        assert got == list(range(n))


async def test_a_backlog_in_messages_yields_to_the_loop_per_message(mosquitto: Any) -> None:
    """A command flood can queue hundreds of messages in one read; handing them all out in
    one step of the consumer would hold up every other callback of the loop (the e-stop
    connection's reads among them) until the backlog is done."""
    n = 50
    async with mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as sub, \
            mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as pub:
        await sub.subscribe("backlog/x", qos=1)
        for i in range(n):
            await pub.publish("backlog/x", str(i).encode(), qos=1)
        await until(lambda: len(sub.messages) == n, what="the backlog queued")
        consumed = 0
        ran_at: list[int] = []
        asyncio.get_running_loop().call_soon(lambda: ran_at.append(consumed))
        it = aiter(sub.messages)
        for _ in range(n):
            await anext(it)
            consumed += 1
        assert ran_at == [0]  # the other callback ran before the first message was handed out


async def test_connect_failure_is_mqtt_error(mosquitto_factory: Any, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(mqtt.MqttError):
        async with mqtt.plain_client("127.0.0.1", port, identifier=_id()):
            pass
    if shutil.which("mosquitto_passwd") is None:
        return
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, {"gym": "right"})
    broker = mosquitto_factory([f"password_file {pw}", "allow_anonymous false"])
    # A CONNACK that refuses (bad credentials) is an MqttError too; the right ones connect.
    with pytest.raises(mqtt.MqttError, match="refused"):
        async with mqtt.plain_client("127.0.0.1", broker.port, username="gym",
                                     password="wrong"):
            pass
    async with mqtt.plain_client("127.0.0.1", broker.port, username="gym",
                                 password="right") as ok:
        assert await ok.subscribe("t", qos=1)


async def test_lost_connection_ends_messages_and_leaves_the_will(mosquitto: Any) -> None:
    cable = await TcpCable(mosquitto.port).start()
    port = int(cable.url.rsplit(":", 1)[1])
    topic = f"will/{uuid.uuid4().hex[:6]}"
    try:
        async with mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as watch:
            await watch.subscribe(topic, qos=1)
            # A clean disconnect: no Last Will.
            async with mqtt.plain_client("127.0.0.1", port, identifier=_id(),
                                         will=mqtt.will(topic, "clean", retain=False)):
                pass
            lost = mqtt.plain_client("127.0.0.1", port, identifier=_id(), keepalive=5,
                                     will=mqtt.will(topic, "offline", retain=False))
            async with lost:
                await lost.subscribe("nothing/here", qos=1)
                reader = asyncio.ensure_future(_next(lost, 30))
                await asyncio.sleep(0)  # the iterator waits
                cable.cut()
                with pytest.raises(mqtt.MqttError):
                    await reader
                with pytest.raises(mqtt.MqttError):  # and stays ended
                    await _next(lost)
                with pytest.raises(mqtt.MqttError):
                    await lost.publish("x", b"", qos=1)
            m = await _next(watch)
            assert (m.topic.value, m.payload) == (topic, b"offline")
            # (Only this one: the clean disconnect's "clean" Will would have come first.)
    finally:
        await cable.close()


async def test_v5_properties_round_trip(mosquitto: Any) -> None:
    async with mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as sub, \
            mqtt.plain_client("127.0.0.1", mosquitto.port, identifier=_id()) as pub:
        await sub.subscribe("req/#", qos=1)
        await pub.publish("req/a", b"{}", qos=1, properties=response_properties("rep/a", b"c1"))
        m = await _next(sub)
        response = mqtt.response_to(m.properties)
        assert response is not None
        assert response[0] == "rep/a" and response[1].CorrelationData == b"c1"
        await pub.publish("req/b", b"{}", qos=1)
        assert mqtt.response_to((await _next(sub)).properties) is None


async def test_nodelay_on_every_adapter_socket(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    daemon_client = mqtt.client(config, _id(), None)
    async with daemon_client, mqtt.plain_client("127.0.0.1", mosquitto.port) as plain, \
            mqtt.Client("127.0.0.1", mosquitto.port, socket_options=()) as bare:
        for c in (daemon_client, plain):
            assert mqtt.raw_socket(c).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # Not by accident: without the option the kernel's default (Nagle on) stays.
        assert not mqtt.raw_socket(bare).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert mqtt.raw_socket(daemon_client) is None  # closed with the context


async def test_tls_and_credentials_reach_the_connection(mosquitto_factory: Any, pki: Path,
                                                        tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, {"gym": "s3cret"})
    broker = mosquitto_factory([f"password_file {pw}", "allow_anonymous false"], listener_extra=[
        f"cafile {pki / 'ca.crt'}", f"certfile {pki / 'server.crt'}",
        f"keyfile {pki / 'server.key'}"])
    good = make_config(broker, tmp_path, mqtt={
        "tls": {"ca_file": str(pki / "ca.crt")}, "username": "gym", "password": "s3cret"})
    client = mqtt.client(good, _id(), None)
    async with client:
        sock = mqtt.raw_socket(client)
        assert isinstance(sock, ssl.SSLSocket) and sock.version() is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await client.publish("t", b"", qos=1)
    # The CA is really used: another one fails the handshake; so do missing credentials.
    other = tmp_path / "other"
    other.mkdir()
    from daemon_helpers import openssl

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", "o.key", "-out", "o.crt", "-subj", "/CN=other", cwd=other)
    wrong_ca = make_config(broker, tmp_path, mqtt={
        "tls": {"ca_file": str(other / "o.crt")}, "username": "gym", "password": "s3cret"})
    with pytest.raises(mqtt.MqttError):
        async with mqtt.client(wrong_ca, _id(), None):
            pass
    no_user = make_config(broker, tmp_path, mqtt={"tls": {"ca_file": str(pki / "ca.crt")}})
    with pytest.raises(mqtt.MqttError):
        async with mqtt.client(no_user, _id(), None):
            pass
