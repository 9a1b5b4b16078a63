"""The per-leg state machine: a leg's facts, folded from its events in any order.

A leg is one visit of a call to one queue. Its state is the *set of facts* its events
established, so the result does not depend on arrival order or on duplicates; the outcome
and durations are then a pure function of those facts. Rules for impossible sequences
(each counted under `Leg.anomalies()`, never raised):

- the same kind of fact twice under different event ids: the earliest instant wins
  (ties: the smaller event id), e.g. answered twice by different agents;
- answered together with abandoned / flowed out: the answer wins;
- several unanswered endings (abandoned, flowed out, transferred before answer): the
  earliest wins (ties: abandoned, then flowed out, then transferred);
- an unanswered transfer counts as a flow-out with reason "transfer";
- a negative duration (e.g. answered before queued) is clamped to 0;
- a hold end without a start is ignored; a hold still open at the end of talk closes there;
- without `call.ended`, talk ends at the transfer of the leg, else at the end of wrap-up;
- queue figures need `call.queued`; handle time needs `call.answered` and `call.wrapup_ended`.
"""

from __future__ import annotations

from typing import Final

import msgspec

from .events import (
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallFlowedOut,
    CallHoldEnded,
    CallHoldStarted,
    CallLegEvent,
    CallQueued,
    CallTransferred,
    CallWrapupEnded,
    Envelope,
)

MINUTE_MS: Final = 60_000

LegKey = tuple[str, str, str, int]
"""(tenant_id, call_id, queue_id, visit)"""

# What `Leg.apply` may have changed, as bits of the contribution parts (below).
NOTHING: Final = 0
OFFERED_CHANGED: Final = 1
OUTCOME_CHANGED: Final = 2
HANDLE_CHANGED: Final = 4
TRANSFER_CHANGED: Final = 8

ANSWERED: Final = 0
ABANDONED: Final = 1
FLOWED_OUT: Final = 2

# Contribution parts, each attributed to one 1-minute bucket (UTC start, ms):
Offered = tuple[int]  # (minute,)
Outcome = tuple[int, int, int, str]  # (minute, ANSWERED|ABANDONED|FLOWED_OUT, wait_ms, agent_id)
Handle = tuple[int, str, int, int, int]  # (minute, agent_id, talk_ms, hold_ms, wrap_ms)
Transfer = tuple[int, str]  # (minute, agent_id)
Contribution = tuple[Offered | None, Outcome | None, Handle | None, Transfer | None]
NO_CONTRIBUTION: Final[Contribution] = (None, None, None, None)


def minute_of(at_ms: int) -> int:
    """Start (ms) of the UTC minute containing `at_ms`."""
    return at_ms - at_ms % MINUTE_MS


def at_ms(event: Envelope) -> int:
    """The event's source instant in integer milliseconds since the epoch."""
    return int(event.occurred_at.timestamp() * 1000)


class Fact(msgspec.Struct, array_like=True, gc=False):
    """One established instant, with the event id that established it (for ties)."""

    at: int
    event_id: str
    detail: str = ""

    def beats(self, other: Fact) -> bool:
        return (self.at, self.event_id) < (other.at, other.event_id)


class Leg(msgspec.Struct, kw_only=True, gc=False):
    """Facts of one leg; mutated only by `apply`."""

    tenant_id: str
    call_id: str
    queue_id: str
    visit: int
    seen: tuple[str, ...] = ()
    queued: Fact | None = None
    priority: int = 0
    caller_key: str | None = None
    answered: Fact | None = None  # detail: agent id
    abandoned: Fact | None = None
    flowed_out: Fact | None = None  # detail: reason
    transferred: Fact | None = None  # detail: target
    ended: Fact | None = None
    wrapup_ended: Fact | None = None
    hold_starts: tuple[int, ...] = ()
    hold_ends: tuple[int, ...] = ()
    repeats: int = 0
    first_at: int = 2**62
    last_at: int = -(2**62)
    contribution: Contribution = NO_CONTRIBUTION

    @property
    def key(self) -> LegKey:
        return (self.tenant_id, self.call_id, self.queue_id, self.visit)

    def apply(self, event: CallLegEvent, occurred_ms: int) -> int:
        """Fold one event into the facts. Returns the contribution parts that may have
        changed (`*_CHANGED` bits), or NOTHING for a duplicate event id or a repeated fact
        that lost to the one already kept."""
        event_id = event.event_id
        seen = self.seen
        if event_id in seen:
            return NOTHING
        # Tuples, not lists: a leg holds no GC-tracked container, which keeps the cyclic
        # collector's passes cheap when hundreds of thousands of legs are open.
        self.seen = (*seen, event_id)
        if occurred_ms > self.last_at:
            self.last_at = occurred_ms
        if occurred_ms < self.first_at:
            self.first_at = occurred_ms
        kind = type(event)
        name, changes = _FACT_OF[kind]
        if not name:  # hold start or end
            if kind is CallHoldStarted:
                self.hold_starts = tuple(sorted((*self.hold_starts, occurred_ms)))
            else:
                self.hold_ends = tuple(sorted((*self.hold_ends, occurred_ms)))
            return changes
        if kind is CallAnswered:
            detail: str = event.agent_id  # type: ignore[attr-defined]
        elif kind is CallFlowedOut:
            detail = event.reason  # type: ignore[attr-defined]
        elif kind is CallTransferred:
            detail = event.to_queue_id or event.to_agent_id or ""  # type: ignore[attr-defined]
        else:
            detail = ""
        fact = Fact(occurred_ms, event_id, detail)
        current: Fact | None = getattr(self, name)
        if current is not None:
            self.repeats += 1
            if not fact.beats(current):
                return NOTHING
        setattr(self, name, fact)
        if kind is CallQueued:
            self.priority = event.priority  # type: ignore[attr-defined]
            self.caller_key = event.caller_key  # type: ignore[attr-defined]
        return changes

    # -- derived ---------------------------------------------------------------------

    def queue_ending(self) -> tuple[int, Fact] | None:
        """(ANSWERED|ABANDONED|FLOWED_OUT, fact) of the leg's queue outcome, if it has one."""
        if self.answered is not None:
            return ANSWERED, self.answered
        abandoned, flowed_out, transferred = self.abandoned, self.flowed_out, self.transferred
        if flowed_out is None and transferred is None:
            return None if abandoned is None else (ABANDONED, abandoned)
        best: tuple[int, int, Fact] | None = None
        for rank, kind, fact in (
            (0, ABANDONED, abandoned),
            (1, FLOWED_OUT, flowed_out),
            (2, FLOWED_OUT, transferred),
        ):
            if fact is not None and (best is None or (fact.at, rank) < (best[2].at, best[0])):
                best = (rank, kind, fact)
        return None if best is None else (best[1], best[2])

    @property
    def waiting(self) -> bool:
        """Queued and not yet answered, abandoned, flowed out or transferred."""
        return (
            self.queued is not None
            and self.answered is None
            and self.abandoned is None
            and self.flowed_out is None
            and self.transferred is None
        )

    def flow_out_reason(self) -> str | None:
        ending = self.queue_ending()
        if ending is None or ending[0] != FLOWED_OUT:
            return None
        return ending[1].detail if ending[1] is self.flowed_out else "transfer"

    def talk_end(self) -> int | None:
        if self.ended is not None:
            return self.ended.at
        if self.transferred is not None:
            return self.transferred.at
        return None if self.wrapup_ended is None else self.wrapup_ended.at

    def hold_ms(self, start: int, end: int) -> int:
        """Time on hold between `start` and `end`, pairing starts and ends in time order."""
        marks = sorted([(t, 0) for t in self.hold_starts] + [(t, 1) for t in self.hold_ends])
        total, since = 0, None
        for t, kind in marks:
            if kind == 0 and since is None:
                since = t
            elif kind == 1 and since is not None:
                total += max(0, min(t, end) - max(since, start))
                since = None
        if since is not None:
            total += max(0, end - max(since, start))
        return total

    def compute_contribution(self) -> Contribution:
        """What this leg adds to bucket counters, given its facts now."""
        return (self.offered(), self.outcome(), self.handle(), self.transfer())

    def recompute(self, changed: int) -> Contribution:
        """The contribution after `apply` returned `changed`: the parts it names are
        computed again, the others are the current ones (the same objects)."""
        offered, outcome, handle, transfer = self.contribution
        if changed & OFFERED_CHANGED:
            offered = self.offered()
        if changed & OUTCOME_CHANGED:
            outcome = self.outcome()
        if changed & HANDLE_CHANGED:
            handle = self.handle()
        if changed & TRANSFER_CHANGED:
            transfer = self.transfer()
        return (offered, outcome, handle, transfer)

    def offered(self) -> Offered | None:
        queued = self.queued
        return None if queued is None else (queued.at - queued.at % MINUTE_MS,)

    def outcome(self) -> Outcome | None:
        queued = self.queued
        if queued is None:
            return None
        answered = self.answered
        if answered is not None:
            wait = answered.at - queued.at
            return (
                answered.at - answered.at % MINUTE_MS,
                ANSWERED,
                wait if wait > 0 else 0,
                answered.detail,
            )
        if self.abandoned is None and self.flowed_out is None and self.transferred is None:
            return None  # still waiting (the usual case at `call.queued`)
        ending = self.queue_ending()
        assert ending is not None
        kind, fact = ending
        wait = fact.at - queued.at
        return (fact.at - fact.at % MINUTE_MS, kind, wait if wait > 0 else 0, "")

    def handle(self) -> Handle | None:
        answered, wrapup_ended = self.answered, self.wrapup_ended
        if answered is None or wrapup_ended is None:
            return None
        # `talk_end()`, inline: with wrap-up ended there always is one.
        ended = self.ended if self.ended is not None else self.transferred
        talk_end = wrapup_ended.at if ended is None else ended.at
        if talk_end < answered.at:
            talk_end = answered.at
        hold = self.hold_ms(answered.at, talk_end) if self.hold_starts else 0
        wrap = wrapup_ended.at - talk_end
        return (
            wrapup_ended.at - wrapup_ended.at % MINUTE_MS,
            answered.detail,
            talk_end - answered.at - hold,
            hold,
            wrap if wrap > 0 else 0,
        )

    def transfer(self) -> Transfer | None:
        answered, transferred = self.answered, self.transferred
        if answered is None or transferred is None:
            return None
        return (minute_of(transferred.at), answered.detail)

    def anomalies(self) -> dict[str, int]:
        """Counts of the rules above that this leg needed (empty for a clean leg)."""
        found: dict[str, int] = {}
        if self.repeats:
            found["repeated_fact"] = self.repeats
        if self.answered is not None and (
            self.abandoned is not None or self.flowed_out is not None
        ):
            found["ending_after_answer"] = 1
        ending = self.queue_ending()
        if self.queued is not None and ending is not None and ending[1].at < self.queued.at:
            found["negative_wait"] = 1
        if self.queued is None and (ending is not None or self.wrapup_ended is not None):
            found["not_queued"] = 1
        talk_end = self.talk_end()
        if self.answered is not None and talk_end is not None and talk_end < self.answered.at:
            found["negative_talk"] = 1
        if len(self.hold_ends) > len(self.hold_starts):
            found["unpaired_hold"] = 1
        return found

    def is_complete(self) -> bool:
        """No further event is expected: ended unanswered, or answered and wrapped up."""
        ending = self.queue_ending()
        if ending is None:
            return False
        return ending[0] != ANSWERED or self.wrapup_ended is not None


# The fact each event establishes ("" for holds) and the parts it may change: the
# offered part depends on `queued`; the outcome on `queued` and the endings (`answered`,
# `abandoned`, `flowed_out`, `transferred`); handle time on `answered`, `transferred`,
# `ended`, `wrapup_ended` and holds; the transfer part on `answered` and `transferred`.
_FACT_OF: Final[dict[type, tuple[str, int]]] = {
    CallQueued: ("queued", OFFERED_CHANGED | OUTCOME_CHANGED),
    CallAnswered: ("answered", OUTCOME_CHANGED | HANDLE_CHANGED | TRANSFER_CHANGED),
    CallAbandoned: ("abandoned", OUTCOME_CHANGED),
    CallFlowedOut: ("flowed_out", OUTCOME_CHANGED),
    CallTransferred: ("transferred", OUTCOME_CHANGED | HANDLE_CHANGED | TRANSFER_CHANGED),
    CallEnded: ("ended", HANDLE_CHANGED),
    CallWrapupEnded: ("wrapup_ended", HANDLE_CHANGED),
    CallHoldStarted: ("", HANDLE_CHANGED),
    CallHoldEnded: ("", HANDLE_CHANGED),
}


def new_leg(event: CallLegEvent) -> Leg:
    return Leg(
        tenant_id=event.tenant_id, call_id=event.call_id, queue_id=event.queue_id, visit=event.visit
    )
