"""Shared test setup.

Tests marked ``lab`` need root, network namespaces and the Debian lab tools. Without them
they skip with the reason, except when PFSLAB_REQUIRE_LAB=1 (set by .ci/run): then they fail,
so CI can never pass by skipping the lab.
"""
import os
import shutil

import pytest

LAB_TOOLS = ("mnexec", "tcpdump", "tshark", "in.tftpd", "iptables")


def lab_unavailable_reason():
    if os.geteuid() != 0:
        return "needs root (run: sudo make test)"
    missing = [t for t in LAB_TOOLS if not shutil.which(t)]
    if missing:
        return f"missing lab tools {missing} (run: sudo make test, which installs them)"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("lab") is None:
        return
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("PFSLAB_REQUIRE_LAB") == "1":
        pytest.fail(f"lab test cannot run here: {reason}", pytrace=False)
    pytest.skip(reason)
