"""Suite-wide settings.

Hypothesis' per-example deadline is a wall-clock timing assertion: on a loaded 2-core CI machine it
fails tests whose behaviour is correct. Speed is measured by the benchmarks in ``bench/``, so the
suite runs property tests without a deadline (and without the too-slow health check).
"""

from hypothesis import HealthCheck, settings

settings.register_profile("meshsec", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("meshsec")
