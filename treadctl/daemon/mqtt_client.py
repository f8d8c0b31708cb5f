"""A small asyncio MQTT v5 client over paho-mqtt 2's public API (used through
:mod:`treadctl.daemon.mqtt`, the adapter; nothing else imports this module or paho).

paho's :class:`paho.mqtt.client.Client` does the protocol (packets, QoS 1 in flight and in
order, keepalive); asyncio drives its socket through paho's documented external-loop hooks
(``on_socket_open`` / ``on_socket_close`` / ``on_socket_register_write`` /
``on_socket_unregister_write`` with ``loop_read`` / ``loop_write`` / ``loop_misc``, as in
the asyncio example that ships with paho's sources):

* the socket's reader calls ``loop_read``, so paho decodes each PUBLISH in the loop's own
  read callback; a per-topic callback (:meth:`Client.message_callback_add`) runs right
  there - the e-stop fast path, no queue, no task in between - and every other message
  goes to :attr:`Client.messages`;
* a publish is handed to paho synchronously (:meth:`Client.publish_nowait`: paho queues the
  packet, the writer callback sends it on the next pass of the loop) or awaited until its
  PUBACK (:meth:`Client.publish`);
* ``connect`` blocks (DNS, TCP, the TLS handshake), so it runs in an executor thread; paho
  calls the socket hooks from there, which is why they go through
  ``call_soon_threadsafe`` off the loop's thread (and directly on it: no self-pipe write
  per publish);
* a lost connection (paho's ``on_disconnect``, or an exception out of ``loop_read`` /
  ``loop_write``) ends :attr:`Client.messages` with :class:`MqttError` and fails every
  awaited call.

The names follow aiomqtt 2 where the daemon used them (``async with``, ``subscribe``,
``publish``, ``messages``, ``Message.topic.value``), so code written against it reads the
same.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

#: paho's own log (packets at DEBUG); WARNING and up by default, as aiomqtt had it.
PAHO_LOG = logging.getLogger("treadctl.mqtt.paho")
PAHO_LOG.setLevel(logging.WARNING)

#: paho's per-topic callback: ``(paho client, userdata, message)``.
TopicCallback = Callable[[Any, Any, paho.MQTTMessage], None]
Payload = bytes | bytearray | str | int | float | None


class MqttError(Exception):
    """The connection failed, was lost, or a call on it failed or timed out."""


class MqttCodeError(MqttError):
    """An :class:`MqttError` with paho's return code or the broker's reason code."""

    def __init__(self, rc: int | ReasonCode, message: str) -> None:
        super().__init__(message)
        self.rc = rc

    def __str__(self) -> str:
        if isinstance(self.rc, ReasonCode):
            return f"{self.args[0]}: [code:{self.rc.value}] {self.rc}"
        return f"{self.args[0]}: [code:{int(self.rc)}] {paho.error_string(self.rc)}"


@dataclass(frozen=True)
class Will:
    """A Last Will: published by the broker when the connection ends without DISCONNECT."""

    topic: str
    payload: Payload = None
    qos: int = 0
    retain: bool = False
    properties: Properties | None = None


class Topic:
    """A received message's topic (``.value``; ``.matches(filter)`` with wildcards)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def matches(self, topic_filter: str) -> bool:
        return paho.topic_matches_sub(topic_filter, self.value)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Topic({self.value!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Topic):
            return self.value == other.value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)


class Message:
    """A received message (those no per-topic callback took)."""

    __slots__ = ("mid", "payload", "properties", "qos", "retain", "topic")

    def __init__(self, topic: str | Topic, payload: bytes | bytearray, qos: int, retain: bool,
                 mid: int,
                 properties: Properties | None) -> None:
        self.topic = topic if isinstance(topic, Topic) else Topic(topic)
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.mid = mid
        self.properties = properties


class _Messages:
    """``async for message in client.messages``: every message in arrival order; ends with
    :class:`MqttError` once the connection is lost (after the ones already received)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> Message:
        c = self._client
        while True:
            if c._queue:
                # One message per pass of the loop, as aiomqtt's queue gave them: one read
                # can queue hundreds (a command flood), and handling them all in one step
                # would hold up every socket's read callback - the e-stops' - until done.
                await asyncio.sleep(0)
                return c._queue.popleft()
            if c._down.is_set():
                raise MqttError("Disconnected during message iteration") from c._lost
            waiter = c._loop.create_future()
            c._waiter = waiter
            try:
                await waiter
            finally:
                c._waiter = None

    def __len__(self) -> int:
        return len(self._client._queue)


class Client:
    """One MQTT v5 connection (see the module docstring). ``async with client:`` connects
    (CONNACK within ``timeout`` seconds, else :class:`MqttError`) and disconnects."""

    def __init__(self, hostname: str, port: int = 1883, *, identifier: str | None = None,
                 username: str | None = None, password: str | None = None,
                 will: Will | None = None, keepalive: int = 60, timeout: float = 10.0,
                 tls_context: ssl.SSLContext | None = None, tls_insecure: bool | None = None,
                 socket_options: Iterable[tuple[int, int, int]] = (),
                 properties: Properties | None = None) -> None:
        self.hostname, self.port, self.keepalive, self.timeout = hostname, port, keepalive, timeout
        self.socket_options = tuple(socket_options)
        self._connect_properties = properties
        p = self._paho = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                     client_id=identifier or "", protocol=paho.MQTTv5,
                                     transport="tcp", reconnect_on_failure=False)
        p.enable_logger(PAHO_LOG)
        if username is not None:
            p.username_pw_set(username, password)
        if tls_context is not None:
            p.tls_set_context(tls_context)
            if tls_insecure is not None:
                p.tls_insecure_set(tls_insecure)  # after tls_set_context, as paho requires
        if will is not None:
            p.will_set(will.topic, will.payload, will.qos, will.retain, will.properties)
        p.on_connect = self._on_connect
        p.on_disconnect = self._on_disconnect
        p.on_message = self._on_message
        p.on_subscribe = self._on_subscribe
        p.on_publish = self._on_publish
        p.on_socket_open = self._on_socket_open
        p.on_socket_close = self._on_socket_close
        p.on_socket_register_write = self._on_socket_register_write
        p.on_socket_unregister_write = self._on_socket_unregister_write
        self._queue: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._misc: asyncio.TimerHandle | None = None
        self._entered = False
        self._loop: asyncio.AbstractEventLoop  # set by __aenter__ (paho calls back after it)
        self._thread = 0
        self._connected: asyncio.Future[None]
        self._down = asyncio.Event()
        self._down.set()  # not connected yet
        self._lost: BaseException | None = None
        self._closing = False  # our own DISCONNECT is on its way

    # ------------------------------------------------------------------ public surface
    @property
    def messages(self) -> _Messages:
        return _Messages(self)

    def socket(self) -> Any:
        """The connection's socket (an ``ssl.SSLSocket`` with TLS), None when closed."""
        return self._paho.socket()

    def message_callback_add(self, topic_filter: str, callback: TopicCallback) -> None:
        """Call ``callback(paho_client, userdata, paho_message)`` for messages matching
        ``topic_filter`` inside the socket's read callback, where paho decoded them; they
        do not reach :attr:`messages`."""
        self._paho.message_callback_add(topic_filter, callback)

    def publish_nowait(self, topic: str, payload: Payload = None, qos: int = 0,
                       retain: bool = False, properties: Properties | None = None) -> int:
        """Hand one message to paho now (it keeps QoS 1 in flight and in order); paho's
        return code (0: queued for the socket). Call it on the loop's thread."""
        return int(self._paho.publish(topic, payload, qos, retain, properties).rc)

    async def publish(self, topic: str, payload: Payload = None, qos: int = 0,
                      retain: bool = False, properties: Properties | None = None, *,
                      timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiomqtt's
        """Publish and wait until it is sent (QoS 0) or acknowledged (QoS 1/2)."""
        info = self._paho.publish(topic, payload, qos, retain, properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttCodeError(info.rc, "Could not publish message") from self._lost
        if info.is_published():
            return
        await self._wait(info.mid, timeout)

    async def subscribe(self, topic: str | list[tuple[str, SubscribeOptions]], qos: int = 0,
                        options: SubscribeOptions | None = None,
                        properties: Properties | None = None, *,
                        timeout: float | None = None  # noqa: ASYNC109 - aiomqtt's
                        ) -> list[ReasonCode]:
        """Subscribe (one filter, or a list of ``(filter, options)`` in one SUBSCRIBE);
        the broker's reason codes, one per filter."""
        rc, mid = self._paho.subscribe(topic, qos, options, properties)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttCodeError(rc, "Could not subscribe") from self._lost
        result: list[ReasonCode] = await self._wait(mid, timeout)
        return result

    async def __aenter__(self) -> Client:
        if self._entered:
            raise MqttError("the client is already connected")
        self._entered = True
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._connected = self._loop.create_future()
        self._down = asyncio.Event()
        self._lost = None
        self._closing = False
        self._queue.clear()
        try:
            try:
                # Blocking (DNS, TCP connect, TLS handshake): off the loop.
                await self._loop.run_in_executor(None, self._connect)
            except (OSError, ValueError) as exc:
                raise MqttError(f"{exc or type(exc).__name__}") from exc
            try:
                await asyncio.wait_for(asyncio.shield(self._connected), self.timeout)
            except TimeoutError:
                raise MqttError("no CONNACK from the broker (timed out)") from None
        except BaseException:
            self._teardown()
            self._entered = False
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if not self._down.is_set():
                self._closing = True
                # DISCONNECT goes out after everything already queued (no Last Will).
                if self._paho.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    try:
                        await asyncio.wait_for(self._down.wait(), self.timeout)
                    except TimeoutError:
                        PAHO_LOG.warning("no clean disconnect within %g s", self.timeout)
        finally:
            self._teardown()
            self._entered = False

    # ------------------------------------------------------------------ internals
    def _connect(self) -> None:
        p = self._paho
        p.connect(self.hostname, self.port, self.keepalive,
                  clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
                  properties=self._connect_properties)

    async def _wait(self, mid: int, limit_s: float | None) -> Any:
        if self._down.is_set():
            raise MqttError("not connected") from self._lost
        fut = self._pending[mid] = self._loop.create_future()
        try:
            return await asyncio.wait_for(fut, self.timeout if limit_s is None else limit_s)
        except TimeoutError:
            raise MqttError("Operation timed out") from None
        finally:
            self._pending.pop(mid, None)

    def _soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the loop: now on its thread, else via ``call_soon_threadsafe``."""
        if threading.get_ident() == self._thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _gone(self, exc: BaseException | None) -> None:
        """The connection is over (``exc`` None: a clean disconnect we asked for)."""
        if self._down.is_set():
            return
        self._lost = exc
        self._down.set()
        err = MqttError("connection lost") if exc is None else exc
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        if not self._connected.done():
            self._connected.set_exception(err if exc is not None else MqttError("closed"))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _failed(self, exc: BaseException) -> None:
        """An exception out of paho's read/write: the connection cannot go on."""
        PAHO_LOG.warning("MQTT connection to %s:%s failed: %r", self.hostname, self.port, exc)
        self._gone(MqttError(f"connection failed: {exc!r}"))
        self._teardown()

    def _teardown(self) -> None:
        """No more callbacks from the loop; the socket closed (paho's, if still open)."""
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        sock = self._paho.socket()
        if sock is not None:
            fd = sock.fileno()
            if fd >= 0:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            sock.close()

    def _on_readable(self) -> None:
        p = self._paho
        try:
            while True:
                p.loop_read()
                sock = p.socket()
                # A TLS record may hold more than paho read: drain it before sleeping.
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                    break
        except Exception as exc:
            self._failed(exc)

    def _on_writable(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as exc:
            self._failed(exc)

    def _tick(self) -> None:
        """paho's keepalive (PINGREQ, and a broker silent for too long is a lost link)."""
        self._misc = None
        if self._paho.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._misc = self._loop.call_later(1.0, self._tick)

    def _start_ticks(self) -> None:
        if self._misc is None and not self._down.is_set():
            self._misc = self._loop.call_later(1.0, self._tick)

    # paho's callbacks (VERSION2 signatures) -------------------------------------------
    # Called from the executor thread during connect, from the loop's thread afterwards.
    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):  # ssl.SSLSocket included
            for option in self.socket_options:
                sock.setsockopt(*option)
        loop = self._loop
        self._soon(loop.add_reader, sock.fileno(), self._on_readable)
        self._soon(self._start_ticks)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        fd, loop = sock.fileno(), self._loop
        if fd >= 0:
            self._soon(loop.remove_reader, fd)
            self._soon(loop.remove_writer, fd)

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        fd, loop = sock.fileno(), self._loop
        if fd >= 0:
            self._soon(loop.add_writer, fd, self._on_writable)

    def _on_socket_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        fd, loop = sock.fileno(), self._loop
        if fd >= 0:
            self._soon(loop.remove_writer, fd)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if self._connected.done():
            return
        if reason == 0:
            self._connected.set_result(None)
        else:
            self._connected.set_exception(MqttCodeError(reason, "Connection refused"))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Properties | None) -> None:
        if self._closing and reason == 0:
            self._soon(self._gone, None)
        else:
            self._soon(self._gone, MqttCodeError(reason, "Unexpected disconnection"))

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._queue.append(Message(message.topic, message.payload, message.qos,
                                   message.retain, message.mid,
                                   getattr(message, "properties", None)))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        fut = self._pending.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        fut = self._pending.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(None)
