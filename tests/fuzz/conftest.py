"""Hypothesis profiles for the fuzz tests.

``ci`` (the default, what ``make test`` runs): 200 examples per test. ``long`` (``make fuzz``, or
``PAPERWIRE_FUZZ=long``): 2,500 per test, over 10,000 in all. No example database is written:
a failure prints its reproducing example, and the runs stay read-only on the tree.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # a slow machine is not a bug; crashes and wrong answers are
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=200, **_COMMON)
settings.register_profile("long", max_examples=2500, **_COMMON)
settings.load_profile(os.environ.get("PAPERWIRE_FUZZ", "ci"))
