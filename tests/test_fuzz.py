"""Fuzz every public entry point with malformed arguments, on every usable backend.

The number of calls scales with the hypothesis profile (HYPOTHESIS_PROFILE=thorough
makes at least 10,000); the total is printed at the end of the test session.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clnet

import fuzz_api
from conftest import USABLE

NAMES = sorted(fuzz_api.ENTRY_POINTS)


def _calls_per_entry():
    profile = settings.default
    # ci: 20 examples x up to 2 calls each; thorough: 400 x 2 (>= 10,000 calls over all entry points)
    return profile.max_examples


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spec", USABLE)
def test_fuzz_entry_point(spec, name):
    backend = clnet.get_backend(spec)
    ep = fuzz_api.ENTRY_POINTS[name]

    @settings(max_examples=_calls_per_entry())
    @given(st.data())
    def one(data):
        slots = list(ep.slots)
        for _ in range(data.draw(st.integers(1, 2))):
            i = data.draw(st.integers(0, len(slots) - 1))
            slots[i] = data.draw(fuzz_api.malformed_values(ep.slots[i]))
        fuzz_api.run_call(ep, backend, slots)
        # The valid call still works after whatever came before (no poisoned device state).
        fuzz_api.run_call(ep, backend, list(ep.slots))

    one()
