"""What the other daemons' WebSocket clients watch, as they announce it: the relay sends a
heartbeat to its peers only when one of them has a client watching that sensor (transitions
always go).

Each daemon announces its interest (every sensor, or a set of serials) in numbered parts, since
a relay message is small (NOTIFY payloads stay under 8 kB) and a daemon's clients may watch
hundreds of thousands of serials. It announces again whenever what its clients watch changes
and every refresh interval otherwise; an interest not refreshed within its time to live lapses,
so a daemon that died stops costing its peers anything. A peer is live from its first whole
announcement until it lapses: the relay sends transitions only while some peer is (relay.py).
Pure code: time comes in as `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Peer:
    everything: bool = False
    serials: frozenset[str] = frozenset()
    expires: float = 0.0  # 0 until a whole announcement has arrived
    started: float = 0.0  # when the announcement being assembled began
    # An announcement being assembled: its generation, the parts still missing, the serials so far.
    generation: int = -1
    missing: set[int] = field(default_factory=set)
    gathering: set[str] = field(default_factory=set)
    gathering_everything: bool = False


class PeerInterest:
    """The union of the live peers' announced interests."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._peers: dict[str, _Peer] = {}
        self.everything = False
        self._serials: frozenset[str] = frozenset()
        self.peers = 0  # peers whose interest is in force (asked for every change relayed)

    def wants(self, serial: str) -> bool:
        """Whether some live peer's clients watch `serial`."""
        return self.everything or serial in self._serials

    def update(
        self,
        instance: str,
        generation: int,
        part: int,
        parts: int,
        everything: bool,
        serials: list[str],
        now: float,
    ) -> bool:
        """One part of `instance`'s announcement number `generation`. The announcement takes
        effect (replacing that peer's previous one) when all its parts have arrived; parts of
        an older generation than the one being assembled are ignored. True when this made a
        peer live that was not (its first whole announcement, or the first since it lapsed)."""
        peer = self._peers.setdefault(instance, _Peer())
        if generation < peer.generation or not 0 <= part < parts:
            return False
        if generation > peer.generation:
            peer.generation = generation
            peer.started = now
            peer.missing = set(range(parts))
            peer.gathering = set()
            peer.gathering_everything = False
        if part not in peer.missing:
            return False
        peer.missing.discard(part)
        peer.gathering.update(serials)
        peer.gathering_everything |= everything
        if peer.missing:
            return False
        met = not peer.expires
        peer.everything = peer.gathering_everything
        peer.serials = frozenset(peer.gathering)
        peer.gathering = set()
        peer.expires = now + self._ttl
        self._merge()
        return met

    def expire(self, now: float) -> list[str]:
        """Forget the interest of peers that have not refreshed it within the time to live
        (and announcements whose parts have not all come within it); their names."""
        lapsed = [
            name for name, p in self._peers.items() if (p.expires or p.started + self._ttl) <= now
        ]
        for name in lapsed:
            del self._peers[name]
        if lapsed:
            self._merge()
        return lapsed

    def _merge(self) -> None:
        live = [p for p in self._peers.values() if p.expires]
        self.peers = len(live)
        self.everything = any(p.everything for p in live)
        self._serials = frozenset().union(*(p.serials for p in live))
