"""The gym daemon (``treadctl daemon``): MQTT bridge, many treadmills, systemd integration.

* :mod:`.config`    the TOML config, validated into dataclasses (``ConfigError`` names fields)
* :mod:`.bridge`    the MQTT contract as pure code: topics, command parsing, payloads
* :mod:`.service`   lanes (one per treadmill), supervision, reconnects, start-up, shutdown
* :mod:`.cli`       ``treadctl daemon [--config PATH] [--check]``
* :mod:`.discovery` Home Assistant MQTT discovery; :mod:`.sdnotify` systemd notifications
"""
