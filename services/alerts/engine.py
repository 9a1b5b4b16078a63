"""Alert evaluation over live figures: sample every rule's targets, run the pure core
(`services.kpi.alerts.step`), and commit states, alerts, history and outbox rows together.

The engine keeps every (rule, target) state in memory and writes a state to the store
only when something other than its latest value changed, in the same transaction as the
alert rows and notices that change caused. After a restart it resumes from the stored
states (`resume`): the downtime is a gap in the metric's history, so nothing is inferred
inside it, nothing already notified is notified again, and a breach that ended while the
process was down resolves at the first evaluation after the restart.

KPI rules are not evaluated while the pipeline is stale (catching up after a restart, or
failing its store writes): stale figures would start and end breaches that never were.
Pipeline-staleness rules are evaluated always.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec

from ..kpi.alerts import (
    Notice,
    Output,
    Recipient,
    Rule,
    TargetState,
    Transition,
    acknowledge,
    initial_state,
    resume,
    retire,
    routes,
    step,
)
from ..store.alerts import AlertRecord, AlertStore, Batch, Delivery, HistoryRecord
from .metrics import AlertMetrics
from .source import MetricSource, Target
from .views import notice_payload

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (rule_id, target key)

_encode = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(TargetState).decode

METRIC_LABELS: Final = {
    "sl_rolling": "SL ({w} min)",
    "sl_interval": "SL (interval)",
    "sl_interval_projected": "Projected interval SL",
    "calls_waiting": "Calls waiting",
    "longest_wait_s": "Longest wait",
    "asa_s": "ASA ({w} min)",
    "aht_s": "AHT ({w} min)",
    "abandon_rate_pct": "Abandon rate ({w} min)",
    "agents_available": "Agents available",
    "occupancy_pct": "Occupancy ({w} min)",
    "pipeline_staleness_s": "Pipeline staleness",
}


def _essence(state: TargetState) -> bytes:
    """The state without its latest sample: what must survive a restart."""
    return _encode(msgspec.structs.replace(state, at_ms=0, value=None, threshold=None))


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.endswith("_pct") or metric.startswith("sl_"):
        return f"{value:.1f}%"
    if metric.endswith("_s"):
        return f"{value:.0f} s"
    return f"{value:g}"


def summary(rule: Rule, target: Target, value: float | None, threshold: float | None) -> str:
    """One line for people: what, how bad, against what, where."""
    label = METRIC_LABELS[rule.metric].format(w=rule.window_min)
    where = "/".join(x for x in (target.tenant_id, target.queue_id, target.team_id) if x)
    text = (
        f"{label} {_fmt(rule.metric, value)} {rule.op} {_fmt(rule.metric, threshold)}"
        f" on {where or 'the floor'}"
    )
    return f"{text}: {rule.summary}" if rule.summary else text


class AlertEngine:
    """Evaluates every enabled rule at an instant; owns the in-memory states."""

    def __init__(
        self, store: AlertStore, source: MetricSource, metrics: AlertMetrics, public_url: str
    ) -> None:
        self.store = store
        self.source = source
        self.metrics = metrics
        self.public_url = public_url
        self.states: dict[Key, TargetState] = {
            key: _decode_state(raw) for key, raw in store.load_states().items()
        }
        self._saved: dict[Key, bytes] = {k: _essence(s) for k, s in self.states.items()}
        self._resumed = False
        self._rules: dict[str, Rule] = {}
        self._targets: dict[Key, Target] = {}
        self._open: dict[str, AlertRecord] = {
            a.alert_id: a for a in store.alerts(None, open_only=True, every_tenant=True)
        }

    # -- evaluation --------------------------------------------------------------------

    def evaluate(self, now_ms: int) -> list[Output]:
        """Sample and evaluate every enabled rule at `now_ms` (UTC ms); commit the result."""
        if not self._resumed:
            self.states = {k: resume(s, now_ms) for k, s in self.states.items()}
            self._resumed = True
        saved = self._snapshot()
        stale = self.source.begin(now_ms)
        rules = {r.rule_id: r for r in self.store.rules() if r.enabled}
        recipients = self.store.recipients()
        batch = Batch()
        outputs: list[Output] = []
        for rule in rules.values():
            if stale and rule.metric != "pipeline_staleness_s":
                continue
            for target in self.source.targets(rule):
                sample = self.source.sample(rule, target, now_ms)
                key = (rule.rule_id, target.key)
                state = self.states.get(key) or initial_state(now_ms)
                tz = rule.timezone or self.source.timezone(target, now_ms)
                new, out = step(rule, state, now_ms, sample, tz, target.key)
                self._targets[key] = target
                self._apply(rule, target, key, new, out, now_ms, recipients, batch)
                outputs += out
        # States of rules that were removed or disabled: their open alerts resolve.
        for key in [k for k in self.states if k[0] not in rules]:
            outputs += self._retire(key, now_ms, recipients, batch)
        self._commit(batch, saved)
        self._rules = rules
        return outputs

    def _snapshot(self) -> tuple[dict[Key, TargetState], dict[Key, bytes], dict[str, AlertRecord]]:
        return dict(self.states), dict(self._saved), dict(self._open)

    def _commit(
        self, batch: Batch,
        saved: tuple[dict[Key, TargetState], dict[Key, bytes], dict[str, AlertRecord]],
    ) -> None:  # fmt: skip
        """Write the batch; if that fails, forget the round in memory too, so the next
        evaluation derives the same transitions and notices again (nothing is lost)."""
        try:
            self.store.commit(batch)
        except Exception:
            self.states, self._saved, self._open = saved
            raise

    def remove_rule(self, rule_id: str, now_ms: int) -> list[Output]:
        """Resolve the open alerts of a rule that is being removed (call before deleting)."""
        recipients = self.store.recipients()
        saved = self._snapshot()
        batch = Batch()
        outputs: list[Output] = []
        for key in [k for k in self.states if k[0] == rule_id]:
            outputs += self._retire(key, now_ms, recipients, batch)
        self._commit(batch, saved)
        return outputs

    def _retire(
        self, key: Key, now_ms: int, recipients: list[Recipient], batch: Batch
    ) -> list[Output]:
        state = self.states[key]
        rule = self._rules.get(key[0]) or self._placeholder(key)
        target = self._targets.get(key) or _target_from_key(key[1])
        tz = rule.timezone or self.source.timezone(target, now_ms)
        new, out = retire(rule, state, now_ms, tz)
        self._apply(rule, target, key, new, out, now_ms, recipients, batch, reason="rule removed")
        if new.phase == "idle" and not new.owed:
            del self.states[key]
            self._saved.pop(key, None)
            batch.states[key] = None
        return out

    def _placeholder(self, key: Key) -> Rule:
        """A stand-in for a rule gone before this process saw it (removed while down)."""
        alert = next((a for a in self._open.values() if a.rule_id == key[0]), None)
        target = _target_from_key(key[1])
        return Rule(
            rule_id=key[0], tenant_id=target.tenant_id,
            scope="floor" if target.tenant_id is None else "tenant", metric="calls_waiting",
            op=">", threshold=0.0, severity=(alert.severity if alert else "warning"),  # type: ignore[arg-type]
        )  # fmt: skip

    def _apply(
        self, rule: Rule, target: Target, key: Key, state: TargetState, out: list[Output],
        now_ms: int, recipients: list[Recipient], batch: Batch, reason: str = "",
    ) -> None:  # fmt: skip
        """Turn one state change into rows: alerts, history, outbox, the state itself."""
        self.states[key] = state
        for o in out:
            if isinstance(o, Transition):
                self._transition(rule, target, o, now_ms, batch, reason)
            else:
                self._notice(rule, o, now_ms, recipients, batch)
        # keep the open alert's value current for the API and the team view
        if state.alert_id is not None and state.alert_id in self._open:
            record = self._open[state.alert_id]
            if (record.value, record.threshold) != (state.value, state.threshold):
                record = msgspec.structs.replace(
                    record, value=state.value, threshold=state.threshold, updated_at_ms=now_ms,
                    summary=summary(rule, target, state.value, state.threshold),
                )  # fmt: skip
                self._open[state.alert_id] = record
                batch.alerts[state.alert_id] = record
        essence = _essence(state)
        if self._saved.get(key) != essence:
            self._saved[key] = essence
            batch.states[key] = _encode(state)

    def _transition(
        self, rule: Rule, target: Target, t: Transition, now_ms: int, batch: Batch, reason: str
    ) -> None:
        self.metrics.transitions.labels(t.kind).inc()
        batch.history.append(HistoryRecord(t.alert_id, t.kind, t.at_ms, t.value, reason))
        if t.kind == "pending":
            record = AlertRecord(
                alert_id=t.alert_id, rule_id=rule.rule_id, target=target.key,
                tenant_id=target.tenant_id, queue_id=target.queue_id, team_id=target.team_id,
                severity=rule.severity, state="pending",
                summary=summary(rule, target, t.value, t.threshold), value=t.value,
                threshold=t.threshold, started_at_ms=t.since_ms, updated_at_ms=now_ms,
            )  # fmt: skip
        else:
            current = self._open.get(t.alert_id) or self.store.alert(t.alert_id)
            if current is None:
                log.error("%s transition of unknown alert %s", t.kind, t.alert_id)
                return
            if t.kind == "cancelled":
                self._open.pop(t.alert_id, None)
                batch.alerts[t.alert_id] = None
                return
            changes: dict[str, Any] = {"value": t.value, "threshold": t.threshold,
                                       "updated_at_ms": now_ms}  # fmt: skip
            if t.kind == "firing":
                changes |= {"state": "firing", "fired_at_ms": t.at_ms}
            else:
                changes |= {"state": "resolved", "resolved_at_ms": t.at_ms}
            record = msgspec.structs.replace(current, **changes)
        if record.state == "resolved":
            self._open.pop(t.alert_id, None)
        else:
            self._open[t.alert_id] = record
        batch.alerts[t.alert_id] = record

    def _notice(
        self, rule: Rule, n: Notice, now_ms: int, recipients: list[Recipient], batch: Batch
    ) -> None:
        record = batch.alerts.get(n.alert_id) or self._open.get(n.alert_id)
        record = record or self.store.alert(n.alert_id)
        if record is None:
            log.error("%s notice of unknown alert %s", n.kind, n.alert_id)
            return
        targets: list[tuple[str, str, str]]
        if n.kind == "firing":
            targets = [
                (r.recipient_id, r.channel, r.address)
                for r in routes(
                    recipients, record.tenant_id, record.queue_id, record.team_id, record.severity
                )
            ]
        else:
            # Resolutions and repeats go to whoever was told it fired (even if routing
            # changed since), including a firing notice written in this same batch.
            told: set[tuple[str, str, str]] = set(self.store.firing_recipients(n.alert_id))
            told |= {
                (d.recipient_id, d.channel, d.address)
                for d in batch.outbox
                if d.alert_id == n.alert_id and d.kind == "firing"
            }
            targets = sorted(told)
        rule_info = {"metric": rule.metric, "op": rule.op, "window_min": rule.window_min,
                     "for_s": rule.for_s}  # fmt: skip
        payload = msgspec.json.encode(
            notice_payload(n.kind, n.at_ms, record, self.public_url, rule_info)
        ).decode()
        for recipient_id, channel, address in targets:
            self.metrics.notices.labels(n.kind).inc()
            batch.outbox.append(
                Delivery(
                    alert_id=n.alert_id,
                    kind=n.kind,
                    due_ms=n.at_ms,
                    recipient_id=recipient_id,
                    channel=channel,
                    address=address,
                    payload=payload,
                    created_at_ms=now_ms,
                    next_attempt_ms=now_ms,
                )
            )

    # -- acknowledgement ---------------------------------------------------------------

    def acknowledge(self, alert_id: str, who: str, now_ms: int) -> AlertRecord | None:
        """Record that `who` took the alert on (stops repeat notices). The first
        acknowledgement stands; returns the alert, or None if there is no such alert."""
        record = self._open.get(alert_id) or self.store.alert(alert_id)
        if record is None or record.acknowledged_at_ms is not None:
            return record
        record = msgspec.structs.replace(
            record, acknowledged_by=who, acknowledged_at_ms=now_ms, updated_at_ms=now_ms
        )
        saved = self._snapshot()
        batch = Batch(alerts={alert_id: record})
        batch.history.append(HistoryRecord(alert_id, "acknowledged", now_ms, record.value, who))
        for key, state in self.states.items():
            if state.alert_id == alert_id:
                self.states[key] = acknowledge(state, alert_id)
                self._saved[key] = _essence(self.states[key])
                batch.states[key] = _encode(self.states[key])
        if alert_id in self._open:
            self._open[alert_id] = record
        self._commit(batch, saved)
        self.metrics.transitions.labels("acknowledged").inc()
        return record


def _target_from_key(key: str) -> Target:
    tenant, queue, team = key.split("|")
    return Target(None if tenant == "*" else tenant, queue or None, team or None)
