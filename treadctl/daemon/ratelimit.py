"""The lane's command rate limit (``[daemon] command_rate_per_s``, docs/mqtt.md): a token
bucket on the lane's clock. ``cmd/stop`` and ``cmd/estop`` never go through it."""

from __future__ import annotations


class TokenBucket:
    """``rate_per_s`` commands per second on average, bursts up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.burst
        self._t: float | None = None

    def take(self, now: float) -> bool:
        if self._t is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate_per_s)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
