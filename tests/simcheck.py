"""Checks shared by the in-memory protocol tests (SimNet runs)."""


def assert_declared(net):
    """Every phone made only the state changes that states.TRANSITIONS lists."""
    assert not [r.text for node in net.nodes.values() for r in node.logs
                if "undeclared transition" in r.text]


def assert_all_verified(phones):
    """Every phone ended, verified: no hang, no failure, every installed file's digest ok."""
    for p in phones:
        assert p.completed is not None, f"{p.id.name} hangs"
        assert p.completed.ok, p.id.name
        assert all(i.sha256_ok for i in p.installed.values()), p.id.name
