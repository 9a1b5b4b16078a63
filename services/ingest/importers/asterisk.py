"""Importer for Asterisk's queue_log: the stock pipe file and a database table export (CSV).

Pipe format (`/var/log/asterisk/queue_log`), one line per queue event:
`epoch|callid|queue|agent|VERB|data1|data2|...`; `epoch` is Unix seconds of the PBX clock,
`callid` the caller channel's unique id, `agent` the member name (e.g. `SIP/8007`,
`Agent/1127`, `Local/1127@agents`), "NONE" when a field does not apply.

CSV table export (`uid,date_time,callid,queue_name,type,event,param1,param2,param3,entpos,
expos,htime,ttime,time`, as PBXware writes it): `date_time` is the epoch, `type` the agent,
`event` the verb. Its data fields are re-arranged into the stock pipe order per verb before
mapping: `param1` holds the caller id (ENTERQUEUE, COMPLETE*, ABANDON ...), `htime` the
hold (wait) time, `ttime` the talk time, `entpos`/`expos` the original and exit queue
positions, RINGNOANSWER's ring time (ms) is in `htime`; CONNECT carries the member's
channel id and ring time in `param2`/`param3`, transfers the extension and context in
`param2`/`param3`. The `time` column (PBX local wall time, rounded) is not used.

Legs. A leg is (callid, queue, visit): every ENTERQUEUE of a callid into a queue starts the
next visit (1, 2, ...); later lines of that callid and queue belong to the latest visit
(visit 1 when its ENTERQUEUE was never seen). Event ids are
`asterisk/<callid>/<queue>/<visit>/<kind>`, so re-importing a log is idempotent downstream.
Instants are the lines' epochs (UTC), except where stated.

Verb → event:

- ENTERQUEUE(url|callerid) → `call.queued` (priority 0; `caller_key` = HMAC of the caller
  id under the tenant's secret, or nothing; the number itself is never emitted).
- CONNECT(holdtime|bridgedchanneluniqueid|ringtime) → `call.answered` by the line's agent.
- COMPLETEAGENT / COMPLETECALLER(holdtime|calltime|origposition) → `call.ended` and
  `call.wrapup_ended` at answer + calltime. Asterisk reads the clock for the start of talk
  just after logging CONNECT, so the line's epoch can be one second past answer +
  calltime; the end is placed where Asterisk's own calltime puts it (rule
  `talk_end_from_calltime`), so talk = calltime and wait = CONNECT's holdtime exactly.
  queue_log has no after-call work: wrap-up is 0 and handle time is the talk time.
- TRANSFER / BLINDTRANSFER(extension|context|holdtime|calltime|origposition) and
  ATTENDEDTRANSFER(method|...|holdtime|calltime|origposition) → `call.transferred` at the
  line's epoch (ends the leg; the target extension is a dial-plan target, not known to be a
  queue or an agent, so neither target field is set), plus `call.ended` and
  `call.wrapup_ended` at answer + calltime as for COMPLETE*.
- ABANDON(position|origposition|waittime) → `call.abandoned` (the caller hung up).
- EXITWITHTIMEOUT → `call.flowed_out` reason timeout; EXITWITHKEY(key|...) → key;
  EXITEMPTY → empty (the caller left the queue without an answer, not by hanging up).
- RINGNOANSWER(ringtime) → nothing (a member's phone rang out; the call still waits);
  counted as `ignored_verb:RINGNOANSWER`, like every verb without a KPI meaning
  (QUEUESTART, CONFIGRELOAD, AGENTDUMP, JOINEMPTY, PBXware's OUTDIAL/OUT* ...).

Agents. The agent id is the member name without its technology and context
(`Agent/1127`, `Local/1127@agents/n` and `SIP/1127` are all agent `1127`), so a member's
login and its calls line up. States (`agent.state_changed`, team `default` unless given),
emitted only when the state, reason or queue set changes:
ADDMEMBER adds the queue and makes the agent present, REMOVEMEMBER removes it (no queue
left: offline); AGENTLOGIN / AGENTCALLBACKLOGIN → present, AGENTLOGOFF /
AGENTCALLBACKLOGOFF → offline; PAUSE / PAUSEALL(reason) → aux with that reason, UNPAUSE /
UNPAUSEALL → not paused; CONNECT → on_call until the leg's COMPLETE* / transfer. The state
is on_call while on a queue call, else offline if logged off, else aux if paused, else
available (queue_log does not log wrap-up, so occupancy has no wrap-up time).

Not used (`skipped`): `malformed_line` (too few fields, bad epoch or number), `no_call_id`
/ `no_queue` / `no_agent` (a call verb without them), `invalid_event`, `ignored_verb:<VERB>`.
Rules (`rules`): `talk_end_from_calltime`, `no_enterqueue_seen` (a leg's later line without
its ENTERQUEUE: its queue figures are missing downstream), `complete_without_connect` (talk
end at the line's epoch).

State is kept per open leg and agent; legs idle for a day are forgotten, which bounds
memory when following a live log for months.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Final

import msgspec

from services.kpi.events import (
    SCHEMA_VERSION,
    AgentStateChanged,
    AgentStateName,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallFlowedOut,
    CallQueued,
    CallTransferred,
    CallWrapupEnded,
    Event,
    FlowOutReason,
)

from ..pseudonym import caller_key
from .envelope import LegEventT, leg_event, stable_id, validated
from .summary import ImporterError, ImportSummary

logger = logging.getLogger(__name__)

SOURCE: Final = "asterisk"
DEFAULT_TENANT: Final = "default"
DEFAULT_TEAM: Final = "default"
CSV_COLUMNS: Final = (
    "date_time",
    "callid",
    "queue_name",
    "type",
    "event",
    "param1",
    "param2",
    "param3",
    "entpos",
    "expos",
    "htime",
    "ttime",
)
FLOW_OUTS: Final[dict[str, FlowOutReason]] = {
    "EXITWITHTIMEOUT": "timeout",
    "EXITWITHKEY": "key",
    "EXITEMPTY": "empty",
}
COMPLETES: Final = frozenset({"COMPLETEAGENT", "COMPLETECALLER"})
TRANSFERS: Final = frozenset({"TRANSFER", "BLINDTRANSFER", "ATTENDEDTRANSFER"})
LEG_VERBS: Final = frozenset(
    {"ENTERQUEUE", "CONNECT", "ABANDON", *FLOW_OUTS, *COMPLETES, *TRANSFERS}
)
MEMBER_VERBS: Final = frozenset(
    {
        "ADDMEMBER",
        "REMOVEMEMBER",
        "AGENTLOGIN",
        "AGENTCALLBACKLOGIN",
        "AGENTLOGOFF",
        "AGENTCALLBACKLOGOFF",
        "PAUSE",
        "PAUSEALL",
        "UNPAUSE",
        "UNPAUSEALL",
    }
)
NONE: Final = "NONE"
#: Legs and visit counters idle this long (s, source clock) are forgotten.
LEG_IDLE_S: Final = 86_400
PRUNE_EVERY: Final = 10_000


class Record(msgspec.Struct, frozen=True):
    """One queue_log event in the stock pipe layout; `epoch` in Unix seconds."""

    epoch: float
    callid: str
    queue: str
    agent: str
    verb: str
    data: tuple[str, ...]

    def digest(self) -> str:
        """A short stable hash of the whole record (ids of events not tied to a leg)."""
        raw = "|".join((repr(self.epoch), self.callid, self.queue, self.agent, self.verb))
        raw += "|" + "|".join(self.data)
        return hashlib.sha256(raw.encode()).hexdigest()[:20]


def parse_epoch(text: str) -> float:
    """Unix seconds of a queue_log timestamp field (integer, or with a fraction)."""
    value = float(text)
    if not 0 <= value < 2**33:
        raise ValueError(f"epoch out of range: {text!r}")
    return int(value) if value.is_integer() else value


def parse_pipe_line(line: str) -> Record:
    """A stock `epoch|callid|queue|agent|VERB|data...` line; ValueError if malformed."""
    fields = line.rstrip("\r\n").split("|")
    if len(fields) < 5:
        raise ValueError(f"{len(fields)} fields, expected at least 5")
    epoch, callid, queue, agent, verb, *data = fields
    if not verb.strip():
        raise ValueError("empty event verb")
    return Record(
        parse_epoch(epoch),
        callid.strip(),
        queue.strip(),
        agent.strip(),
        verb.strip().upper(),
        tuple(data),
    )


def record_from_csv(row: dict[str, str]) -> Record:
    """A CSV table-export row in the stock pipe layout (see the module docstring)."""
    verb = row["event"].strip().upper()
    p1, p2, p3 = row["param1"], row["param2"], row["param3"]
    entpos, expos, htime, ttime = row["entpos"], row["expos"], row["htime"], row["ttime"]
    data: tuple[str, ...]
    if verb == "ENTERQUEUE":
        data = ("", p1)
    elif verb == "CONNECT":
        data = (htime, p2, p3)
    elif verb in COMPLETES:
        data = (htime, ttime, entpos)
    elif verb in ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY"):
        data = (expos, entpos, htime)
    elif verb == "EXITWITHKEY":
        data = (p2, expos, entpos, htime)
    elif verb in TRANSFERS:
        data = (p2, p3, htime, ttime, entpos)
    elif verb == "RINGNOANSWER":
        data = (htime,)
    else:
        data = (p1, p2, p3)
    return Record(
        parse_epoch(row["date_time"]),
        row["callid"].strip(),
        row["queue_name"].strip(),
        row["type"].strip(),
        verb,
        data,
    )


def agent_id(member: str) -> str | None:
    """The agent id of a queue_log member name (see the module docstring); None for NONE."""
    member = member.strip()
    if not member or member.upper() == NONE:
        return None
    if "/" in member:
        member = member.split("/", 1)[1]
    member = member.split("@", 1)[0].split("/", 1)[0]
    return member or None


def instant(epoch: float) -> datetime:
    """The UTC instant of a Unix timestamp."""
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class _Leg:
    visit: int
    last: float
    queued: bool = False
    answered_at: float | None = None
    agent: str | None = None


@dataclass
class _Agent:
    queues: set[str] = field(default_factory=set)
    online: bool | None = None  # None: never seen logging in or out
    paused: str | None = None  # the pause reason ("" without one) while paused
    calls: set[tuple[str, str]] = field(default_factory=set)
    emitted: tuple[str, str | None, tuple[str, ...]] | None = None

    def state(self) -> tuple[AgentStateName, str | None]:
        if self.calls:
            return "on_call", None
        if self.online is False:
            return "offline", None
        if self.paused is not None:
            return "aux", self.paused or None
        return "available", None


class QueueLogImporter:
    """queue_log lines (pipe or CSV export) → events; keeps per-leg and per-agent state.

    `summary` is updated as `events()` is consumed (live while following a file).
    """

    def __init__(
        self,
        tenant_id: str = DEFAULT_TENANT,
        caller_secret: bytes | None = None,
        team_id: str = DEFAULT_TEAM,
    ) -> None:
        self.tenant_id = tenant_id
        self.caller_secret = caller_secret
        self.team_id = team_id
        self.summary = ImportSummary()
        self._legs: dict[tuple[str, str], _Leg] = {}
        self._agents: dict[str, _Agent] = {}
        self._latest = 0.0

    # -- input layouts ------------------------------------------------------------------

    def events(self, lines: Iterable[str]) -> Iterator[Event]:
        """Events of pipe lines or of a CSV export (detected from the first line)."""
        iterator = iter(lines)
        for first in iterator:
            if first.strip():
                break
        else:
            return
        rest = chain([first], iterator)
        if first.lstrip("\ufeff").startswith("uid,") and "date_time" in first:
            yield from self.csv_events(rest)
        else:
            yield from self.pipe_events(rest)

    def pipe_events(self, lines: Iterable[str]) -> Iterator[Event]:
        """Events of stock pipe-format lines; blank lines are not records."""
        for index, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            self.summary.records += 1
            try:
                record = parse_pipe_line(line)
            except ValueError as exc:
                self.summary.skip("malformed_line", index, str(exc))
                continue
            yield from self._record(record, index)

    def csv_events(self, lines: Iterable[str]) -> Iterator[Event]:
        """Events of a CSV table export with a header line (see the module docstring)."""
        reader = csv.DictReader(lines)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ImporterError(f"not a queue_log CSV export: missing {', '.join(missing)}")
        for row in reader:
            index = reader.line_num
            self.summary.records += 1
            try:
                record = record_from_csv(row)
            except (ValueError, AttributeError) as exc:
                # AttributeError: a short row leaves trailing columns None.
                self.summary.skip("malformed_line", index, str(exc))
                continue
            yield from self._record(record, index)

    # -- mapping ------------------------------------------------------------------------

    def _record(self, record: Record, index: int) -> Iterator[Event]:
        summary = self.summary
        self._latest = max(self._latest, record.epoch)
        if summary.records % PRUNE_EVERY == 0:
            self._prune()
        verb = record.verb
        try:
            if verb in LEG_VERBS:
                events = self._leg_record(record, index)
            elif verb in MEMBER_VERBS:
                events = self._member_record(record, index)
            else:
                summary.skip(f"ignored_verb:{verb}")
                return
        except (ValueError, IndexError) as exc:
            summary.skip("malformed_line", index, f"{verb}: {exc}")
            return
        if events is not None:
            yield from validated(events, summary, index)

    def _leg_record(self, record: Record, index: int) -> list[Event] | None:
        summary = self.summary
        verb, callid, queue = record.verb, record.callid, record.queue
        if not callid or callid.upper() == NONE:
            summary.skip("no_call_id", index, f"{verb} without a call id")
            return None
        if not queue or queue.upper() == NONE:
            summary.skip("no_queue", index, f"{verb} without a queue")
            return None
        key = (callid, queue)
        leg = self._legs.get(key)
        if verb == "ENTERQUEUE":
            leg = self._legs[key] = _Leg(visit=1 if leg is None else leg.visit + 1, last=0.0)
            leg.queued = True
        elif leg is None:
            leg = self._legs[key] = _Leg(visit=1, last=0.0)
            summary.rule("no_enterqueue_seen")
        leg.last = record.epoch
        visit = leg.visit
        at = instant(record.epoch)

        def event(kind: type[LegEventT], name: str, when: datetime, **fields: Any) -> LegEventT:
            return leg_event(
                kind,
                event_id=stable_id(SOURCE, callid, queue, str(visit), name),
                occurred_at=when,
                tenant_id=self.tenant_id,
                source=SOURCE,
                call_id=callid,
                queue_id=queue,
                visit=visit,
                **fields,
            )

        if verb == "ENTERQUEUE":
            number = record.data[1] if len(record.data) > 1 else ""
            key_ = caller_key(self.caller_secret, number)
            return [event(CallQueued, "queued", at, caller_key=key_)]
        if verb == "ABANDON":
            return [event(CallAbandoned, "abandoned", at)]
        if verb in FLOW_OUTS:
            return [event(CallFlowedOut, "flowed_out", at, reason=FLOW_OUTS[verb])]
        if verb == "CONNECT":
            agent = agent_id(record.agent)
            if agent is None:
                summary.skip("no_agent", index, "CONNECT without an agent")
                return None
            leg.answered_at, leg.agent = record.epoch, agent
            events: list[Event] = [event(CallAnswered, "answered", at, agent_id=agent)]
            events += self._agent_call(record, agent, key, start=True)
            return events
        # COMPLETE* or a transfer: holdtime|calltime|origposition are the last 3 fields.
        calltime = int(record.data[-2]) if verb in TRANSFERS else int(record.data[1])
        if calltime < 0:
            raise ValueError(f"negative calltime {calltime}")
        if leg.answered_at is None:
            summary.rule("complete_without_connect")
            end = record.epoch
        else:
            end = leg.answered_at + calltime
            if end != record.epoch:
                summary.rule("talk_end_from_calltime")
        events = []
        if verb in TRANSFERS:
            events.append(event(CallTransferred, "transferred", at))
        ended_at = instant(end)
        events.append(event(CallEnded, "ended", ended_at))
        events.append(event(CallWrapupEnded, "wrapup_ended", ended_at))
        agent = leg.agent or agent_id(record.agent)
        if agent is not None:
            events += self._agent_call(record, agent, key, start=False)
        # The leg is over; keep only its visit number for a later ENTERQUEUE of the call.
        self._legs[key] = _Leg(visit=leg.visit, last=record.epoch)
        return events

    def _member_record(self, record: Record, index: int) -> list[Event] | None:
        agent = agent_id(record.agent)
        if agent is None:
            self.summary.skip("no_agent", index, f"{record.verb} without an agent")
            return None
        state = self._agents.setdefault(agent, _Agent())
        queue = record.queue if record.queue and record.queue.upper() != NONE else None
        verb = record.verb
        if verb == "ADDMEMBER":
            if queue is not None:
                state.queues.add(queue)
            state.online = True
        elif verb == "REMOVEMEMBER":
            if queue is not None:
                state.queues.discard(queue)
            if not state.queues:
                state.online = False
        elif verb in ("AGENTLOGIN", "AGENTCALLBACKLOGIN"):
            state.online = True
        elif verb in ("AGENTLOGOFF", "AGENTCALLBACKLOGOFF"):
            state.online = False
        elif verb in ("PAUSE", "PAUSEALL"):
            state.paused = record.data[0].strip() if record.data else ""
        else:  # UNPAUSE, UNPAUSEALL
            state.paused = None
        return self._agent_change(record, agent, state)

    def _agent_call(
        self, record: Record, agent: str, leg: tuple[str, str], *, start: bool
    ) -> list[Event]:
        state = self._agents.setdefault(agent, _Agent())
        if start:
            state.calls.add(leg)
        else:
            state.calls.discard(leg)
        return self._agent_change(record, agent, state)

    def _agent_change(self, record: Record, agent: str, state: _Agent) -> list[Event]:
        name, reason = state.state()
        queues = tuple(sorted(state.queues))
        current = (name, reason, queues)
        if current == state.emitted:
            return []
        state.emitted = current
        return [
            AgentStateChanged(
                schema_version=SCHEMA_VERSION,
                event_id=stable_id(SOURCE, "agent", agent, record.digest()),
                occurred_at=instant(record.epoch),
                tenant_id=self.tenant_id,
                source=SOURCE,
                agent_id=agent,
                team_id=self.team_id,
                state=name,
                reason=reason,
                queues=list(queues),
            )
        ]

    def _prune(self) -> None:
        """Forget legs idle for `LEG_IDLE_S` (a call that long is not a call any more)."""
        horizon = self._latest - LEG_IDLE_S
        stale = [key for key, leg in self._legs.items() if leg.last < horizon]
        for key in stale:
            del self._legs[key]
        for agent in self._agents.values():
            agent.calls -= set(stale)
        if stale:
            logger.debug("asterisk: forgot %d idle legs", len(stale))
