"""When to renew a certificate: Istio's ``rotateTime`` as a pure function of now and rand."""

from __future__ import annotations

from datetime import datetime, timedelta


def rotation_delay(
    *,
    issued_at: datetime,
    not_after: datetime,
    now: datetime,
    ratio: float = 0.5,
    jitter: float = 0.01,
    rand: float,
) -> timedelta:
    """How long to wait before renewing; ``timedelta(0)`` means renew now.

    ``jitter_ratio = ratio + (2*rand - 1) * jitter`` clamped to [0, 1];
    ``grace = jitter_ratio * (not_after - issued_at)``; delay = ``not_after - grace - now`` (≥ 0).
    With the defaults a 24h certificate is renewed 12h ± 14.4 min after issuance.
    ``rand`` is a uniform sample in [0, 1) supplied by the caller.
    """
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")
    jitter_ratio = min(1.0, max(0.0, ratio + (2.0 * rand - 1.0) * jitter))
    lifetime = not_after - issued_at
    grace = lifetime * jitter_ratio
    delay = not_after - grace - now
    return max(delay, timedelta(0))
