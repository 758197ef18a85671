"""Every frame once: a LAN-speed burst (bulk TCP between phones, the way a parent hands a
file to its child, plus broadcasts) is in the subnet capture frame for frame, by the bridge
ports' own counters and by tcpdump's."""
import pytest

pytestmark = pytest.mark.lab


def test_a_lan_speed_burst_is_captured_frame_for_frame():
    from pfslab.lab.capture_bench import measure
    r = measure(pairs=2, mb=10.0, broadcasts=1000)
    sub, wan = r["captures"]["subnet-1"], r["captures"]["wan"]
    # 20 MB in ~1448-byte segments, their ACKs, the broadcasts: well over 14,000 frames
    assert sub["frames_on_interfaces"] > 14_000
    assert sub["captured"] == sub["frames_on_interfaces"]
    assert (sub["dropped"], sub["missing"], sub["complete"]) == (0, 0, True)
    assert wan["complete"] is True and wan["captured"] == wan["frames_on_interfaces"]
