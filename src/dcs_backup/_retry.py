"""Retry policy: jittered exponential backoff bounded in attempts and time, built on tenacity."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import tenacity


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to try again after a retryable failure.

    attempts:     failed attempts in a row before giving up (default 8).
    timeout:      seconds after the first attempt after which no new attempt starts (default 300).
    wait_initial: backoff ceiling of the first retry, in seconds (default 0.5); it doubles
                  each retry up to ``wait_max`` (default 15), and the wait is drawn uniformly
                  below the ceiling ("full jitter"). A server's ``Retry-After`` is a floor.
    """

    attempts: int = 8
    timeout: float = 300.0
    wait_initial: float = 0.5
    wait_max: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.timeout <= 0 or self.wait_initial < 0 or self.wait_max < self.wait_initial:
            raise ValueError("timeout must be > 0 and 0 <= wait_initial <= wait_max")

    def backoff(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the retry that follows ``failures`` failures in a row."""
        ceiling = min(self.wait_max, self.wait_initial * (2 ** max(failures - 1, 0)))
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.wait_max * 4))
        return delay

    def retrying(
        self,
        *,
        is_retryable: Callable[[BaseException], bool],
        retry_after: Callable[[BaseException], float | None],
        failures: Callable[[tenacity.RetryCallState], int] | None = None,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.AsyncRetrying:
        """A tenacity loop for this policy.

        ``failures`` counts the failures that should bound the loop (by default every attempt);
        a caller that makes progress between attempts can return fewer so that progress is not
        punished.
        """
        count = failures or (lambda state: state.attempt_number)

        def stop(state: tenacity.RetryCallState) -> bool:
            return count(state) >= self.attempts or (
                state.seconds_since_start is not None and state.seconds_since_start >= self.timeout
            )

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hint = retry_after(error) if error is not None else None
            return self.backoff(max(count(state), 1), hint)

        return tenacity.AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
            before_sleep=before_sleep,
        )
