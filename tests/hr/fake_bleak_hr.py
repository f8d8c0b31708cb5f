"""A radio-less stand-in for bleak's BleakClient as a Heart Rate Service strap sees it: the
surface treadctl/hr/strap.py uses (connect, start_notify on 0x2A37, disconnect, the
disconnected callback). ``FakeStrapRadio`` scripts connect failures and link losses and
pushes notifications; every call is logged with the loop's time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bleak.exc import BleakError

from treadctl.hr.strap import HRM_UUID


@dataclass
class FakeStrapRadio:
    fail_connects: int = 0  # the next N connects fail
    log: list[tuple[float, str]] = field(default_factory=list)
    clients: list[FakeHRClient] = field(default_factory=list)

    def factory(self, device: Any, disconnected: Callable[[Any], None]) -> FakeHRClient:
        c = FakeHRClient(self, device, disconnected)
        self.clients.append(c)
        return c

    def note(self, what: str) -> None:
        self.log.append((asyncio.get_running_loop().time(), what))

    @property
    def current(self) -> FakeHRClient | None:
        live = [c for c in self.clients if c.is_connected]
        return live[-1] if live else None

    def push(self, value: bytes) -> bool:
        c = self.current
        if c is None or c.callback is None:
            return False
        c.callback(HRM_UUID, bytearray(value))
        return True

    def lose_link(self) -> None:
        c = self.current
        if c is not None:
            c.is_connected = False
            self.note("link lost")
            c.disconnected(c)


class FakeHRClient:
    def __init__(self, radio: FakeStrapRadio, device: Any,
                 disconnected: Callable[[Any], None]) -> None:
        self.radio = radio
        self.address = device if isinstance(device, str) else getattr(device, "address", "?")
        self.disconnected = disconnected
        self.is_connected = False
        self.callback: Callable[[Any, bytearray], None] | None = None

    async def connect(self, **_: Any) -> bool:
        self.radio.note("connect")
        await asyncio.sleep(0.05)
        if self.radio.fail_connects > 0:
            self.radio.fail_connects -= 1
            raise BleakError("Device with address AA:BB was not found")
        self.is_connected = True
        return True

    async def start_notify(self, uuid: str, callback: Callable[[Any, bytearray], None],
                           **_: Any) -> None:
        if not self.is_connected:
            raise BleakError("Not connected")
        if uuid != HRM_UUID:
            raise BleakError(f"Characteristic {uuid} was not found")
        self.radio.note("start_notify")
        self.callback = callback

    async def disconnect(self) -> bool:
        was = self.is_connected
        self.is_connected = False
        self.callback = None
        self.radio.note("disconnect")
        if was:
            self.disconnected(self)
        return True
