"""The root's record of its tree: breadth-first binary placement, bounded and expiring.

Joiners are unauthenticated, so the record is bounded (``max_members``: a JOIN beyond it is
refused FULL) and members expire: one that has not reported READY within ``ttl`` of its last
placement (a spoofed address, or a phone that died) is dropped and its slot freed. A member
that reported READY holds the file and stays. Placement is O(1) amortized per join.
"""
from __future__ import annotations

from collections import OrderedDict, deque

NO_IP = "0.0.0.0"


class Registrar:
    def __init__(self, root_ip: str, *, max_members: int = 2048, ttl: float = 600.0):
        self.root = root_ip
        self.max_members = max_members
        self.ttl = ttl
        self.parent: dict[str, str | None] = {root_ip: None}
        self.depth: dict[str, int] = {root_ip: 0}
        self.children: dict[str, list[str]] = {root_ip: []}
        self.offer: dict[str, tuple[str, int, int]] = {}
        self.free: deque[str] = deque([root_ip])   # members with a free slot, BFS order
        self.dead: set[str] = set()                 # reported lost or bad: never a parent
        self.pending: OrderedDict[str, float] = OrderedDict()   # not READY: ip -> placed at
        self.ready: set[str] = set()

    @property
    def members(self) -> int:
        return len(self.parent) - 1

    def all_ready(self) -> bool:
        """Every member placed holds the file (none is still waiting)."""
        return not self.pending

    def mark_ready(self, ip: str) -> None:
        if ip in self.parent and ip != self.root:
            self.pending.pop(ip, None)
            self.ready.add(ip)

    def expire(self, now: float) -> None:
        """Drop the members that stayed without READY for ``ttl`` since their placement."""
        while self.pending:
            ip, t = next(iter(self.pending.items()))
            if now - t < self.ttl:
                return
            self._drop(ip)

    def _drop(self, ip: str) -> None:
        self.pending.pop(ip, None)
        up = self.parent.pop(ip, None)
        self.depth.pop(ip, None)
        self.offer.pop(ip, None)
        self.children.pop(ip, None)
        if up in self.children and ip in self.children[up]:
            self.children[up].remove(ip)
            if up not in self.dead:
                self.free.appendleft(up)

    def _is_ancestor(self, a: str, node: str | None) -> bool:
        while node is not None:
            if node == a:
                return True
            node = self.parent.get(node)
        return False

    def place(self, ip: str, lost_parent: str = NO_IP, now: float = 0.0
              ) -> tuple[str, int, int] | None:
        """Where ``ip`` goes: (parent, slot, depth), or None when no place is left."""
        self.expire(now)
        if (lost_parent != NO_IP and self.parent.get(ip) == lost_parent
                and lost_parent != self.root and len(self.dead) < self.max_members):
            self.dead.add(lost_parent)       # only the joiner's own parent can be reported
        if ip in self.offer:
            old_parent = self.offer[ip][0]
            if old_parent not in self.dead:
                self._touch(ip, now)
                return self.offer[ip]              # a repeated JOIN: the same answer
            if ip in self.children.get(old_parent, []):
                self.children[old_parent].remove(ip)
        elif ip not in self.parent and self.members >= self.max_members:
            return None
        choice = self._free_parent(ip)
        if choice is None:
            return None
        slot = len(self.children[choice])
        self.children[choice].append(ip)
        if len(self.children[choice]) >= 2 and self.free and self.free[0] == choice:
            self.free.popleft()
        new = ip not in self.parent
        self.parent[ip] = choice
        self.depth[ip] = self.depth[choice] + 1
        self.children.setdefault(ip, [])
        if new:
            self.free.append(ip)
        self.offer[ip] = (choice, slot, self.depth[ip])
        self._touch(ip, now)
        return self.offer[ip]

    def _touch(self, ip: str, now: float) -> None:
        if ip not in self.ready:
            self.pending.pop(ip, None)
            self.pending[ip] = now

    def _free_parent(self, ip: str) -> str | None:
        """The first member with a free slot that is not ``ip`` nor in its subtree."""
        skipped = []
        choice = None
        while self.free:
            cand = self.free[0]
            if cand in self.dead or cand not in self.parent or len(self.children[cand]) >= 2:
                self.free.popleft()
                continue
            if cand == ip or self._is_ancestor(ip, cand):   # never under its own subtree
                skipped.append(self.free.popleft())
                continue
            choice = cand
            break
        for s in reversed(skipped):
            self.free.appendleft(s)
        return choice
