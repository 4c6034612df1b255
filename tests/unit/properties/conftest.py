"""Hypothesis profiles of the property tests: ``ccm`` (the default: few, derandomized examples, so
the suite stays fast and every run tries the same inputs) and ``ccm-thorough`` (many random
examples, for a hunt: ``HYPOTHESIS_PROFILE=ccm-thorough pytest tests/unit/properties``). No
deadline: the machine is shared, and the properties are about outcomes, not timing."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ccm",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ccm-thorough",
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ccm"))
