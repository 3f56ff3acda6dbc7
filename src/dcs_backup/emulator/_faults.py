"""Fault injection settings of the emulator's object store, and what it injected."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

FAULT_KINDS = (
    "reset",
    "error_500",
    "slowdown_503",
    "truncate",
    "stall",
    "ignore_range",
    "corrupt",
)


@dataclass(kw_only=True)
class Faults:
    """What the emulated OBS does wrong, per object GET.

    link_lifetime:  seconds a presigned link lives, whatever expiration the client asked
                    (None: as asked).
    rate_limit:     bytes per second per response (None: unlimited), as stores cap streams.
    reset, error_500, slowdown_503, truncate, stall, ignore_range, corrupt: probabilities,
                    per request, of dropping the connection before answering, answering
                    500 InternalError, 503 SlowDown, ending the body early, pausing the body
                    for ``stall_seconds``, answering a Range request with the whole object,
                    and flipping one bit of the body (a lying server or a bad middlebox).
    cut_after:      drop every response after this many body bytes (None: never).
    seed:           makes the fault schedule repeatable.
    """

    link_lifetime: float | None = None
    rate_limit: int | None = None
    reset: float = 0.0
    error_500: float = 0.0
    slowdown_503: float = 0.0
    truncate: float = 0.0
    stall: float = 0.0
    stall_seconds: float = 60.0
    ignore_range: float = 0.0
    corrupt: float = 0.0
    cut_after: int | None = None
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self, *, ranged: bool) -> str | None:
        """The fault to inject into one request, or None."""
        roll = self._rng.random()
        for kind in FAULT_KINDS:
            p = float(getattr(self, kind))
            if kind == "ignore_range" and not ranged:
                continue
            if roll < p:
                return kind
            roll -= p
        return None

    def fraction(self) -> float:
        return self._rng.uniform(0.05, 0.95)


@dataclass
class EmulatorStats:
    """Counters a test or the soak script reads after a run."""

    object_requests: int = 0
    bytes_sent: int = 0
    links_calls: int = 0
    api_calls: int = 0
    auth_failures: int = 0
    expired_requests: int = 0  # object GETs refused because their link had expired
    active_responses: int = 0
    max_active_responses: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    requests_by_file: Counter[str] = field(default_factory=Counter)
