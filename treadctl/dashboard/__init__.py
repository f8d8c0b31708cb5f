"""``treadctl dashboard``: the gym's front desk in a web browser (docs/dashboard.md).

A process of its own and an MQTT client of the public contract (docs/mqtt.md), like any
back-end: it never sits in the safety path, and the daemon's interlocks do not depend on
it. The web side needs the ``dashboard`` extra (aiohttp, argon2-cffi).
"""
