"""Client quality figures the store can back: CSAT from surveys, FCR by repeat contact.

Pure. Inputs are stored facts (survey scores, the first leg of each call with its caller
key); every figure keeps its numerator and denominator, and is None on a zero denominator.

- **CSAT** = satisfied surveys / surveys; a survey is satisfied when
  `score >= satisfied_pct % of scale_max` (80 %: 4 of 5, 8 of 10). A survey counts at the
  instant it was completed (`occurred_at` of `survey.completed`).
- **FCR** (repeat-contact based) = contacts with no further contact from the same caller
  key to the same tenant within the window / contacts whose figure is final. A contact is
  a call (its first queue leg, at the instant it entered that queue); it is final once a
  repeat was seen, or once the whole window has passed (`now >= at + window`). Contacts
  without a caller key cannot be judged and are not counted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import msgspec

from .contracts import Ratio, ratio


class SurveyScore(msgspec.Struct, frozen=True):
    """One completed survey: `score` on a 0..`scale_max` scale."""

    score: int
    scale_max: int


def is_satisfied(score: int, scale_max: int, satisfied_pct: float) -> bool:
    """score >= satisfied_pct % of scale_max, compared without rounding."""
    return score * 100 >= satisfied_pct * scale_max


def csat(surveys: Iterable[SurveyScore], satisfied_pct: float) -> Ratio:
    """Satisfied surveys / surveys."""
    total = satisfied = 0
    for s in surveys:
        total += 1
        satisfied += is_satisfied(s.score, s.scale_max, satisfied_pct)
    return ratio(satisfied, total)


class ContactLeg(msgspec.Struct, frozen=True):
    """A stored queue leg that carries a caller key (the key is an HMAC per tenant)."""

    call_id: str
    caller_key: str
    queue_id: str
    queued_at_ms: int


class Contact(msgspec.Struct, frozen=True, order=True):
    """One call as a contact: its first queue leg's instant (ms) and queue."""

    at_ms: int
    call_id: str
    caller_key: str
    queue_id: str


def contacts(legs: Iterable[ContactLeg]) -> list[Contact]:
    """One contact per call, at its earliest leg (ties: the smaller queue id), in order."""
    first: dict[str, ContactLeg] = {}
    for leg in legs:
        seen = first.get(leg.call_id)
        if seen is None or (leg.queued_at_ms, leg.queue_id) < (seen.queued_at_ms, seen.queue_id):
            first[leg.call_id] = leg
    return sorted(
        Contact(g.queued_at_ms, g.call_id, g.caller_key, g.queue_id) for g in first.values()
    )


class Fcr(msgspec.Struct, frozen=True):
    """FCR of the contacts in a period: `value` = resolved / (resolved + repeated).

    `contacts`: judged contacts in the period; `pending`: those whose window is still open
    and without a repeat so far (not in the ratio); `window_h`: the repeat window, hours.
    """

    value: Ratio
    contacts: int
    resolved: int
    repeated: int
    pending: int
    window_h: int


def fcr(
    all_contacts: list[Contact], start_ms: int, end_ms: int, window_h: int, now_ms: int,
    queue_ids: Collection[str] | None = None,
) -> Fcr:  # fmt: skip
    """FCR of the contacts starting in [start_ms, end_ms) (whose first leg was in one of
    `queue_ids`, if given).

    `all_contacts` must hold every contact of the tenant from `start_ms` up to
    `end_ms + window`, in every queue: a repeat may reach any queue of the tenant.
    """
    window_ms = window_h * 3_600_000
    by_caller: dict[str, list[Contact]] = {}
    for c in sorted(all_contacts):
        by_caller.setdefault(c.caller_key, []).append(c)
    resolved = repeated = pending = 0
    for calls in by_caller.values():
        for i, c in enumerate(calls):
            if not start_ms <= c.at_ms < end_ms:
                continue
            if queue_ids is not None and c.queue_id not in queue_ids:
                continue
            # The next contact of the same caller (sorted by instant, then call id).
            following = next((n for n in calls[i + 1 :] if n.call_id != c.call_id), None)
            if following is not None and following.at_ms <= c.at_ms + window_ms:
                repeated += 1
            elif now_ms >= c.at_ms + window_ms:
                resolved += 1
            else:
                pending += 1
    return Fcr(
        value=ratio(resolved, resolved + repeated),
        contacts=resolved + repeated + pending,
        resolved=resolved,
        repeated=repeated,
        pending=pending,
        window_h=window_h,
    )
