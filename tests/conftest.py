"""Fixtures shared by the test modules.

Metadata routing is a global scikit-learn setting: ``routing`` turns it on for one test (with
``sklearn.config_context``) and checks that it is off again afterwards; ``no_routing`` checks
that a test runs with it off (the default).
"""

import pytest
import sklearn


def _routing_enabled():
    return sklearn.get_config()["enable_metadata_routing"]


@pytest.fixture
def routing():
    """``sklearn.set_config(enable_metadata_routing=True)`` for the test, then restored."""
    assert not _routing_enabled(), "metadata routing was left on by an earlier test"
    with sklearn.config_context(enable_metadata_routing=True):
        assert _routing_enabled()
        yield
    assert not _routing_enabled()


@pytest.fixture
def no_routing():
    """The test runs with metadata routing off (scikit-learn's default)."""
    assert not _routing_enabled()
