"""The phone's state machine: the code's transition table is the one docs/protocol.md shows,
and real runs make no state change outside it."""
import re
from pathlib import Path

import pytest

from pfslab.protocol import phone as phone_mod
from pfslab.protocol.states import TRANSITIONS, State, Timer, event_name
from pfslab.sim import scenario

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def documented_transitions():
    text = DOC.read_text()
    section = text.split("### Transitions", 1)[1]
    rows = set()
    for line in section.splitlines():
        m = re.match(r"\|\s*([A-Z_]+)\s*\|\s*([^|]+?)\s*\|\s*([A-Z_]+)\s*\|", line)
        if m and m.group(1) != "from":
            rows.add((m.group(1), m.group(2), m.group(3)))
        elif rows and not line.startswith("|"):
            break
    return rows


def test_docs_table_is_the_code_table():
    code = {(a.value, event_name(e), b.value) for a, e, b in TRANSITIONS}
    doc = documented_transitions()
    assert doc - code == set(), "documented but not in states.TRANSITIONS"
    assert code - doc == set(), "in states.TRANSITIONS but not in docs/protocol.md"


def test_every_state_is_reachable_and_drawn():
    reached = {State.NEW} | {b for _, _, b in TRANSITIONS}
    assert reached == set(State)
    diagram = DOC.read_text().split("## One phone, one file", 1)[1].split("### Transitions")[0]
    for st in State:
        assert re.search(rf"\b{st.value}\b", diagram), f"{st.value} missing from the diagram"


def test_timer_table_keys_are_states_and_timers():
    for (st, kind), handler in phone_mod._TIMER_HANDLERS.items():
        assert isinstance(st, State) and isinstance(kind, Timer) and callable(handler)


@pytest.mark.parametrize("n,subnets,models", [(1, 1, ("CP-7961G",)), (10, 2, ("CP-7961G",)),
                                              (12, 1, ("CP-7961G", "CP-7941G", "CP-7960G"))])
def test_runs_make_only_declared_transitions(n, subnets, models):
    specs = scenario.phone_specs(subnets, n, list(models))
    net, phones = scenario.build(specs)
    for p in phones:
        net.reset(p)
    net.run()
    bad = [r.text for node in net.nodes.values() for r in node.logs
           if "undeclared transition" in r.text]
    assert bad == []
    assert all(p.completed and p.completed.ok for p in phones)
