"""The daemon's MQTT adapter: the one module that imports aiomqtt and paho.

The rest of the daemon names their types through here (:data:`Client`, :data:`Message`,
:data:`MqttError`, :data:`MQTTMessage`, :data:`Properties`) and builds what needs paho's
own classes with these functions (:func:`will`, :func:`subscribe`, :func:`response_to`).

The e-stop fast path needs three things aiomqtt 2 has no public API for: a per-topic
callback that runs in paho's socket read callback (before aiomqtt's queue), a synchronous
fire-and-forget publish (no task per message), and the raw socket (tests check Nagle is
off). They are reached here (aiomqtt's ``_client``) and nowhere else in the daemon: the
lane, the e-stop link, the benchmarks and the tests call these functions. TCP_NODELAY
goes through aiomqtt's public ``socket_options=``.

Why aiomqtt stays below 3: aiomqtt 3 is not published on the registry (2.5.1 is the
latest); when it is, only this module has to follow it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from treadctl.daemon.config import DaemonConfig

#: The client, a received message, and a lost/failed connection, as aiomqtt has them.
Client = aiomqtt.Client
Message = aiomqtt.Message
MqttError = aiomqtt.MqttError

#: Nagle off on every socket the client opens (a small packet written while an earlier one
#: is unacknowledged would wait ~40 ms for the peer's delayed ACK).
NODELAY: tuple[tuple[int, int, int], ...] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

#: paho's per-topic callback: ``(paho client, userdata, message)``.
TopicCallback = Callable[[Any, Any, MQTTMessage], None]


def client(config: DaemonConfig, identifier: str, will: aiomqtt.Will | None) -> aiomqtt.Client:
    """An MQTT v5 client with the configured broker, credentials and TLS, Nagle off."""
    m = config.mqtt
    tls_context: ssl.SSLContext | None = None
    if m.tls is not None:
        tls_context = ssl.create_default_context(cafile=m.tls.ca_file)
        if m.tls.cert_file is not None:
            tls_context.load_cert_chain(m.tls.cert_file, m.tls.key_file)
        if m.tls.insecure:
            tls_context.check_hostname = False
    return aiomqtt.Client(
        m.host,
        m.port,
        username=m.username,
        password=m.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        keepalive=m.keepalive_s,
        timeout=10.0,
        tls_context=tls_context,
        tls_insecure=m.tls.insecure if m.tls is not None else None,
        socket_options=NODELAY,
    )


def will(topic: str, payload: str, *, qos: int = 1, retain: bool = True) -> aiomqtt.Will:
    """A Last Will (the lane's ``status`` ``offline``)."""
    return aiomqtt.Will(topic, payload, qos=qos, retain=retain)


async def subscribe(mqtt: aiomqtt.Client, filters: list[str], qos: int = 1) -> Any:
    """Every filter in one SUBSCRIBE (MQTT v5 subscription options); the broker's codes."""
    opts = SubscribeOptions(qos=qos)
    return await mqtt.subscribe([(f, opts) for f in filters])


def response_to(request: Properties | None) -> tuple[str, Properties] | None:
    """MQTT v5 request/response: the request's Response Topic and the properties of the
    reply (the request's Correlation Data), or None when the request asked for none."""
    topic = getattr(request, "ResponseTopic", None) if request else None
    if not topic:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    correlation = getattr(request, "CorrelationData", None)
    if correlation is not None:
        props.CorrelationData = correlation
    return topic, props


def plain_client(host: str, port: int, **kwargs: Any) -> aiomqtt.Client:
    """A bare MQTT v5 client with Nagle off (benchmarks, tests)."""
    return aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5,
                          socket_options=NODELAY, **kwargs)


def on_topic(mqtt: aiomqtt.Client, topic_filter: str, callback: TopicCallback) -> None:
    """Call ``callback`` for messages on ``topic_filter`` inside paho's socket read
    callback, before aiomqtt queues them (the e-stop path: nothing waits in between)."""
    mqtt._client.message_callback_add(topic_filter, callback)


def publish_nowait(mqtt: aiomqtt.Client, topic: str, payload: bytes | str, qos: int,
                   retain: bool, properties: Properties | None) -> int:
    """Publish synchronously (paho keeps QoS 1 in flight and in order); returns paho's rc
    (0: handed to the socket or queued in paho)."""
    info = mqtt._client.publish(topic, payload, qos, retain, properties)
    return int(info.rc)


def raw_socket(mqtt: aiomqtt.Client) -> Any:
    """The client's socket (None when not connected)."""
    return mqtt._client.socket()


__all__ = [
    "NODELAY",
    "Client",
    "MQTTMessage",
    "Message",
    "MqttError",
    "Properties",
    "client",
    "on_topic",
    "plain_client",
    "publish_nowait",
    "raw_socket",
    "response_to",
    "subscribe",
    "will",
]
