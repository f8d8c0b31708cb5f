"""The daemon's MQTT adapter: the one module (with its client, :mod:`treadctl.daemon.
mqtt_client`) that imports paho; nothing in treadctl imports aiomqtt.

The rest of the daemon and the dashboard name their types through here (:data:`Client`,
:data:`Message`, :data:`MqttError`, :data:`MQTTMessage`, :data:`Properties`) and build
what needs paho's own classes with these functions (:func:`will`, :func:`subscribe`,
:func:`response_to`).

The client is our own small asyncio driver of paho-mqtt 2's public client
(:mod:`treadctl.daemon.mqtt_client`), so the e-stop fast path needs nothing private: a
per-topic callback that runs in the socket's read callback, where paho decoded the
PUBLISH (:func:`on_topic`: paho's ``message_callback_add``), a synchronous fire-and-forget
publish (:func:`publish_nowait`: no task per message), and the socket (:func:`raw_socket`:
tests check Nagle is off). The lane, the e-stop link, the dashboard, the benchmarks and
the tests call these functions. TCP_NODELAY is set on every socket the client opens.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from treadctl.daemon import mqtt_client
from treadctl.daemon.config import DaemonConfig

#: The client, a received message, a Last Will, and a lost/failed connection.
Client = mqtt_client.Client
Message = mqtt_client.Message
Will = mqtt_client.Will
MqttError = mqtt_client.MqttError

#: Nagle off on every socket the client opens (a small packet written while an earlier one
#: is unacknowledged would wait ~40 ms for the peer's delayed ACK).
NODELAY: tuple[tuple[int, int, int], ...] = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

#: paho's per-topic callback: ``(paho client, userdata, message)``.
TopicCallback = Callable[[Any, Any, MQTTMessage], None]


def client(config: DaemonConfig, identifier: str, will: Will | None) -> Client:
    """An MQTT v5 client with the configured broker, credentials and TLS, Nagle off."""
    m = config.mqtt
    tls_context: ssl.SSLContext | None = None
    if m.tls is not None:
        tls_context = ssl.create_default_context(cafile=m.tls.ca_file)
        if m.tls.cert_file is not None:
            tls_context.load_cert_chain(m.tls.cert_file, m.tls.key_file)
        if m.tls.insecure:
            tls_context.check_hostname = False
    return Client(
        m.host,
        m.port,
        username=m.username,
        password=m.password,
        identifier=identifier,
        will=will,
        keepalive=m.keepalive_s,
        timeout=10.0,
        tls_context=tls_context,
        tls_insecure=m.tls.insecure if m.tls is not None else None,
        socket_options=NODELAY,
    )


def will(topic: str, payload: str, *, qos: int = 1, retain: bool = True) -> Will:
    """A Last Will (the lane's ``status`` ``offline``)."""
    return Will(topic, payload, qos=qos, retain=retain)


async def subscribe(mqtt: Client, filters: list[str], qos: int = 1) -> Any:
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


def plain_client(host: str, port: int, **kwargs: Any) -> Client:
    """A bare MQTT v5 client with Nagle off (the dashboard, benchmarks, tests); ``kwargs``
    as :class:`treadctl.daemon.mqtt_client.Client` takes them (identifier, username,
    password, keepalive, tls_context, ...)."""
    kwargs.setdefault("socket_options", NODELAY)
    return Client(host, port, **kwargs)


def on_topic(mqtt: Client, topic_filter: str, callback: TopicCallback) -> None:
    """Call ``callback`` for messages on ``topic_filter`` inside the socket's read
    callback, where paho decoded them, instead of queueing them for ``messages`` (the
    e-stop path: nothing waits in between)."""
    mqtt.message_callback_add(topic_filter, callback)


def publish_nowait(mqtt: Client, topic: str, payload: bytes | str, qos: int,
                   retain: bool, properties: Properties | None) -> int:
    """Publish synchronously (paho keeps QoS 1 in flight and in order); returns paho's rc
    (0: queued for the socket)."""
    return mqtt.publish_nowait(topic, payload, qos, retain, properties)


def raw_socket(mqtt: Client) -> Any:
    """The client's socket (None when not connected)."""
    return mqtt.socket()


__all__ = [
    "NODELAY",
    "Client",
    "MQTTMessage",
    "Message",
    "MqttError",
    "Properties",
    "Will",
    "client",
    "on_topic",
    "plain_client",
    "publish_nowait",
    "raw_socket",
    "response_to",
    "subscribe",
    "will",
]
