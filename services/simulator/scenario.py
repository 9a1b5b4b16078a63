"""Scenario files: a simulated multi-tenant call centre described in TOML.

A scenario is parsed into frozen Structs; every error names the file and the field, e.g.
``demo.toml: tenants[0].queues[1].talk.mean: Expected `float` > 0.0, got `-3```.

Units: durations in seconds unless the field name says otherwise (``minutes``,
``rate_per_hour``). Local times are ``"HH:MM"`` wall-clock times in the tenant's IANA time
zone. Shape of a file::

    name = "demo"                        # becomes part of every event_id and call_id
    source = "callpulse-simulator"       # the envelope's `source`

    [[tenants]]
    id = "acme"
    timezone = "Europe/London"
    caller_pool = 5000                   # optional: draw caller_key from this many callers

    [[tenants.queues]]
    id = "sales"
    rate_per_hour = 120                  # calls per hour before the profile multiplier
    profile = [["08:00", 1.0], ["12:00", 1.5], ["18:00", 0.0]]
    priority = 0                         # 0..9, higher is served first
    patience = { distribution = "exponential", mean = 90 }   # or "none" (never abandons)
    timeout = 600                        # optional: flow out (reason "timeout") after 600 s
    talk = { distribution = "lognormal", mean = 240, sd = 120 }
    hold = { probability = 0.2, length = { distribution = "exponential", mean = 40 } }
    wrapup = { distribution = "constant", value = 20 }
    transfers = [{ to = "support", probability = 0.05 }]

    [[tenants.queues]]
    id = "support"
    rate_per_hour = 60
    talk = { distribution = "exponential", mean = 300 }

    [[tenants.agents]]                   # a group of `count` identical agents
    team = "sales-a"
    count = 8
    skills = ["sales", { queue = "support", level = 2 }]
    shift = { start = "08:00", end = "17:00", days = ["mon", "tue", "wed", "thu", "fri"] }
    breaks = [{ start = "12:00", minutes = 30, reason = "lunch", jitter_minutes = 60 }]
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from pathlib import Path
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .errors import ScenarioError

_LOCAL_TIME: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_ID: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_PREFIX: Final = r"^[A-Za-z0-9._:-]*$"
LocalTime = Annotated[
    str,
    msgspec.Meta(
        pattern=_LOCAL_TIME,
        description='a local wall-clock time "HH:MM" (00:00 to 23:59)',
    ),
]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=48, pattern=_ID)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=_NAME)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=9)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_LEGS_PER_CALL: Final = 20
"""A call stops being transferred after this many legs (guards against transfer loops)."""


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every scenario Struct: immutable, and a misspelt field is an error."""


class _Distribution(_Spec, frozen=True, kw_only=True, tag_field="distribution"):
    """A distribution of a duration in seconds."""

    def sample(self, rng: random.Random) -> float | None:
        """One draw in seconds; None means infinite (never happens)."""
        raise NotImplementedError

    def mean_s(self) -> float | None:
        """The distribution's mean in seconds; None when infinite."""
        raise NotImplementedError


class Exponential(_Distribution, frozen=True, kw_only=True, tag="exponential"):
    """Exponential durations with `mean` seconds."""

    mean: Positive

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)

    def mean_s(self) -> float:
        return self.mean


class Lognormal(_Distribution, frozen=True, kw_only=True, tag="lognormal"):
    """Log-normal durations with the given arithmetic `mean` and `sd` (seconds)."""

    mean: Positive
    sd: Positive

    @property
    def sigma(self) -> float:
        """Standard deviation of the underlying normal (of ln seconds)."""
        return math.sqrt(math.log1p((self.sd / self.mean) ** 2))

    @property
    def mu(self) -> float:
        """Mean of the underlying normal (of ln seconds)."""
        return math.log(self.mean) - self.sigma**2 / 2

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(self.mu, self.sigma)

    def mean_s(self) -> float:
        return self.mean


class Constant(_Distribution, frozen=True, kw_only=True, tag="constant"):
    """Always `value` seconds (0 allowed, e.g. no after-call work)."""

    value: NonNegative

    def sample(self, rng: random.Random) -> float:
        return self.value

    def mean_s(self) -> float:
        return self.value


class Never(_Distribution, frozen=True, kw_only=True, tag="none"):
    """Infinite: the caller never abandons."""

    def sample(self, rng: random.Random) -> None:
        return None

    def mean_s(self) -> None:
        return None


Duration = Exponential | Lognormal | Constant
Patience = Exponential | Lognormal | Constant | Never
NO_WRAPUP: Final = Constant(value=0)


class Hold(_Spec, frozen=True, kw_only=True):
    """With `probability`, a call is put on hold once, for `length` seconds, at a uniformly
    random point of its talk time (talk time excludes the hold)."""

    probability: Probability = 0.0
    length: Duration | None = None


class Transfer(_Spec, frozen=True, kw_only=True):
    """With `probability`, an answered leg ends in a transfer to queue `to` of the same tenant."""

    to: Id
    probability: Probability


class Queue(_Spec, frozen=True, kw_only=True):
    """One ACD queue: its arrivals, callers' patience and handle times."""

    id: Id
    rate_per_hour: NonNegative
    profile: list[tuple[LocalTime, NonNegative]] = []
    priority: Priority = 0
    patience: Patience = Never()
    timeout: Positive | None = None
    talk: Duration
    hold: Hold = Hold()
    wrapup: Duration = NO_WRAPUP
    transfers: list[Transfer] = []

    def multiplier_periods(self) -> list[tuple[int, float]]:
        """The profile as (minute of the local day, multiplier), sorted; [(0, 1.0)] if empty.

        A period runs from its start to the next period's start; the last one runs on past
        midnight to the first period of the next day.
        """
        if not self.profile:
            return [(0, 1.0)]
        return [(minute_of_day(start), multiplier) for start, multiplier in self.profile]


class Skill(_Spec, frozen=True, kw_only=True):
    """A queue an agent serves; the agent takes calls from lower `level`s first."""

    queue: Id
    level: Annotated[int, msgspec.Meta(ge=1, le=99)] = 1


class Shift(_Spec, frozen=True, kw_only=True):
    """Logged on from `start` to `end` (local); `end` before `start` runs past midnight."""

    start: LocalTime
    end: LocalTime
    days: Annotated[list[Weekday], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: list(WEEKDAYS)
    )


class Break(_Spec, frozen=True, kw_only=True):
    """An aux break of `minutes` starting at `start` (local) plus a uniform random delay of
    up to `jitter_minutes`; an agent on a call takes it after the call's wrap-up."""

    start: LocalTime
    minutes: Positive
    reason: Reason = "break"
    jitter_minutes: NonNegative = 0.0


class AgentGroup(_Spec, frozen=True, kw_only=True):
    """`count` agents of one team with the same skills, shift and breaks.

    Agent ids are `{id_prefix}{n:02d}` for n = 1..count (`id_prefix` defaults to `{team}-`).
    Without a shift the agents are logged on for the whole run (and take no breaks).
    """

    team: Id
    count: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    skills: Annotated[list[Id | Skill], msgspec.Meta(min_length=1, max_length=200)]
    id_prefix: Annotated[str, msgspec.Meta(max_length=40, pattern=_PREFIX)] = ""
    shift: Shift | None = None
    breaks: list[Break] = []

    def skill_levels(self) -> list[tuple[str, int]]:
        """(queue id, level) per skill; a bare queue id gets its position (1-based) as level."""
        return [
            (s, position) if isinstance(s, str) else (s.queue, s.level)
            for position, s in enumerate(self.skills, start=1)
        ]

    def agent_ids(self) -> list[str]:
        prefix = self.id_prefix or f"{self.team}-"
        return [f"{prefix}{n:02d}" for n in range(1, self.count + 1)]


class Tenant(_Spec, frozen=True, kw_only=True):
    """One BPO client: its time zone, queues and agents."""

    id: Id
    timezone: str
    queues: Annotated[list[Queue], msgspec.Meta(min_length=1)]
    agents: list[AgentGroup] = []
    caller_pool: Annotated[int, msgspec.Meta(ge=1)] | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Scenario(_Spec, frozen=True, kw_only=True):
    """A whole simulated centre."""

    name: Name
    tenants: Annotated[list[Tenant], msgspec.Meta(min_length=1)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "callpulse-simulator"


def minute_of_day(hhmm: str) -> int:
    """Minutes after local midnight of an "HH:MM" string."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario: {exc.strerror or exc}") from exc
    return parse_scenario(text, origin=str(path))


def parse_scenario(text: str, origin: str = "<scenario>") -> Scenario:
    """Parse and validate scenario TOML text; `origin` prefixes error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: not valid TOML: {exc}") from exc
    try:
        scenario = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{origin}: {_describe(exc)}") from exc
    problem = _check(scenario)
    if problem is not None:
        raise ScenarioError(f"{origin}: {problem}")
    return scenario


_KINDS: Final = {
    "patience": "exponential, lognormal, constant, none",
    "talk": "exponential, lognormal, constant",
    "wrapup": "exponential, lognormal, constant",
    "length": "exponential, lognormal, constant",
}


_PATTERNS: Final = {
    _LOCAL_TIME: 'expected a local time "HH:MM" (00:00 to 23:59)',
    _ID: "expected letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
    _NAME: "expected letters, digits, '.', '_' or '-', starting with a letter or digit",
    _PREFIX: "expected letters, digits, '.', '_', ':' or '-'",
}


def _describe(exc: msgspec.ValidationError) -> str:
    """`field.path: message` from msgspec's `message - at `$.field.path``."""
    message = str(exc)
    path = ""
    if " - at `" in message:
        message, _, at = message.rpartition(" - at `")
        path = at.rstrip("`").removeprefix("$").removeprefix(".")
    if message.startswith("Object missing required field"):
        field = message.split("`")[1]
        path, message = f"{path}.{field}" if path else field, "required field is missing"
    elif message.startswith("Object contains unknown field"):
        field = message.split("`")[1]
        path, message = f"{path}.{field}" if path else field, "unknown field (misspelt?)"
    elif "matching regex" in message:
        message = _PATTERNS.get(message.split("'")[1], message)
    elif path.endswith(".distribution") and message.startswith("Invalid value"):
        kind = re.sub(r"\[\d+\]$", "", path.removesuffix(".distribution").rsplit(".", 1)[-1])
        message = f"{message}; expected one of: {_KINDS.get(kind, 'see the docs')}"
    return f"{path or '(top level)'}: {message}"


def _check(scenario: Scenario) -> str | None:
    """The first cross-field problem as `field.path: message`, or None."""
    tenant_ids: set[str] = set()
    for t, tenant in enumerate(scenario.tenants):
        at = f"tenants[{t}]"
        if tenant.id in tenant_ids:
            return f"{at}.id: tenant {tenant.id!r} appears twice"
        tenant_ids.add(tenant.id)
        try:
            ZoneInfo(tenant.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return (
                f"{at}.timezone: unknown IANA time zone {tenant.timezone!r} "
                "(e.g. 'Europe/London', 'America/New_York', 'Asia/Kolkata')"
            )
        queue_ids = [q.id for q in tenant.queues]
        for q, queue in enumerate(tenant.queues):
            problem = _check_queue(f"{at}.queues[{q}]", queue, queue_ids)
            if problem is not None:
                return problem
        agent_ids: set[str] = set()
        for g, group in enumerate(tenant.agents):
            problem = _check_group(f"{at}.agents[{g}]", group, queue_ids, agent_ids)
            if problem is not None:
                return problem
    return None


def _check_queue(at: str, queue: Queue, queue_ids: list[str]) -> str | None:
    if queue_ids.count(queue.id) > 1:
        return f"{at}.id: queue {queue.id!r} appears twice in this tenant"
    starts = [minute_of_day(start) for start, _ in queue.profile]
    if starts != sorted(set(starts)):
        return f"{at}.profile: period start times must be strictly increasing"
    if queue.hold.probability > 0 and queue.hold.length is None:
        return f"{at}.hold.length: required when hold.probability > 0"
    for n, transfer in enumerate(queue.transfers):
        if transfer.to not in queue_ids:
            return f"{at}.transfers[{n}].to: no queue {transfer.to!r} in this tenant"
    if sum(transfer.probability for transfer in queue.transfers) > 1 + 1e-9:
        return f"{at}.transfers: probabilities add up to more than 1"
    return None


def _check_group(
    at: str, group: AgentGroup, queue_ids: list[str], agent_ids: set[str]
) -> str | None:
    seen: set[str] = set()
    for n, (queue, _) in enumerate(group.skill_levels()):
        if queue not in queue_ids:
            return f"{at}.skills[{n}]: no queue {queue!r} in this tenant"
        if queue in seen:
            return f"{at}.skills[{n}]: queue {queue!r} listed twice"
        seen.add(queue)
    if group.shift is None and group.breaks:
        return f"{at}.breaks: breaks need a `shift` (they are planned per shift)"
    if group.shift is not None and group.shift.start == group.shift.end:
        return f"{at}.shift: start and end are equal (omit `shift` for agents always on)"
    if group.shift is not None:
        start, end = minute_of_day(group.shift.start), minute_of_day(group.shift.end)
        end += 24 * 60 if end <= start else 0
        for n, item in enumerate(group.breaks):
            due = minute_of_day(item.start)
            due += 24 * 60 if due < start else 0
            if not start <= due < end:
                return (
                    f"{at}.breaks[{n}].start: {item.start} is outside the shift "
                    f"{group.shift.start}-{group.shift.end}"
                )
    for agent_id in group.agent_ids():
        if agent_id in agent_ids:
            return f"{at}: agent id {agent_id!r} is also used by another group (set id_prefix)"
        agent_ids.add(agent_id)
    return None
