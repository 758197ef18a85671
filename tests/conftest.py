"""Shared test setup.

Tests marked ``lab`` need root, network namespaces and the Debian lab tools. Without them
they skip with the reason, except when PFSLAB_REQUIRE_LAB=1 (set by .ci/run): then they fail,
so CI can never pass by skipping the lab. The rule is the pytest plugin's (pfslab's lab
fixtures follow it too).
"""
from pfslab.pytest_plugin import skip_or_fail_without_lab

pytest_plugins = ["pytester"]


def pytest_runtest_setup(item):
    if item.get_closest_marker("lab") is not None:
        skip_or_fail_without_lab()
