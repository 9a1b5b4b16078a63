"""Importers against the real data sets and hand-written queue_log lines.

Expected values come from the source files themselves, read here with plain `csv` code
(q_time, ser_time, htime, ttime, per-day counts, dirty-row counts), never from the
importers' own output.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.cli import main
from services.ingest.importers import (
    AnonymousBankImporter,
    FileTail,
    ImporterError,
    NdjsonImporter,
    QueueLogImporter,
    replay,
)
from services.ingest.importers.sink import NdjsonSink
from services.kpi.centre import Centre, Settings
from services.kpi.events import (
    AgentStateChanged,
    CallAnswered,
    CallLegEvent,
    CallQueued,
    Event,
    decode_batch,
    encode_event,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data, never copied
BANK_TSV = DATA / "anonymous-bank" / "1999-02.tsv"
ASTERISK_CSV = DATA / "asterisk" / "pbxware-queue_log-2018.csv"
ISRAEL = ZoneInfo("Asia/Jerusalem")
DAY_MS = 86_400_000
ANSWERED, ABANDONED, FLOWED_OUT = 0, 1, 2


def feed(events: list[Event]) -> Centre:
    """A Centre that accepts a whole month out of order."""
    centre = Centre(Settings(correction_horizon_ms=40 * DAY_MS, allowed_lateness_ms=40 * DAY_MS))
    for event in events:
        centre.apply(event, int(event.occurred_at.timestamp() * 1000))
    return centre


# -- Anonymous Bank, February 1999 ------------------------------------------------------


def secs(clock: str) -> int:
    h, m, s = (int(x) for x in clock.split(":"))
    return h * 3600 + m * 60 + s


def bank_queued(row: dict[str, str]) -> bool:
    # "0:00:00 = never queued", unless the queue stage has an end (a queue entry at midnight).
    return not (row["q_start"] == "0:00:00" and row["q_exit"] == "0:00:00")


def bank_served(row: dict[str, str]) -> bool:
    return row["ser_start"] != "0:00:00" or row["ser_exit"] != "0:00:00"


def bank_usable(row: dict[str, str]) -> bool:
    if row["outcome"] == "HANG":
        return bank_queued(row)
    if row["outcome"] == "AGENT":
        return bank_queued(row) or bank_served(row)
    return False


def stage_instant(row: dict[str, str], field: str) -> datetime:
    """Local instant of a stage clock: the row's date, or the next day when the clock is
    more than 12 hours before the VRU entry (the call crossed midnight)."""
    d = date(1900 + int(row["date"][:2]), int(row["date"][2:4]), int(row["date"][4:]))
    if secs(row["vru_entry"]) - secs(row[field]) > 43_200:
        d += timedelta(days=1)
    h, m, s = (int(x) for x in row[field].split(":"))
    return datetime(d.year, d.month, d.day, h, m, s, tzinfo=ISRAEL)


@pytest.fixture(scope="module")
def bank_rows() -> list[dict[str, str]]:
    with BANK_TSV.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 33_344
    return rows


@pytest.fixture(scope="module")
def bank() -> tuple[AnonymousBankImporter, list[Event], Centre]:
    importer = AnonymousBankImporter(tenant_id="bank-test")
    with BANK_TSV.open(newline="") as handle:
        events = list(importer.events(handle))
    return importer, events, feed(events)


def test_bank_every_usable_row_reproduces_q_time_and_ser_time(bank_rows, bank):
    _, _, centre = bank
    checked_waits = checked_talks = 0
    usable = [row for row in bank_rows if bank_usable(row)]
    assert len(centre.legs) == len(usable)
    for row in usable:
        leg = centre.legs[("bank-test", f"{row['vru+line']}-{row['call_id']}", row["type"], 1)]
        offered, outcome, handle, _ = leg.contribution
        if bank_queued(row):
            assert offered is not None and outcome is not None, row
            kind = ANSWERED if row["outcome"] == "AGENT" else ABANDONED
            assert (outcome[1], outcome[2]) == (kind, int(row["q_time"]) * 1000), row
            checked_waits += 1
        else:
            assert offered is None and outcome is None, row
        if row["outcome"] == "AGENT" and bank_served(row):
            assert handle is not None, row
            agent = "unidentified" if row["server"] == "NO_SERVER" else row["server"]
            assert handle[1:] == (agent, int(row["ser_time"]) * 1000, 0, 0), row
            checked_talks += 1
        else:
            assert handle is None, row
    assert (checked_waits, checked_talks) == (18_059, 27_112)


def test_bank_daily_offered_answered_abandoned_match_the_file(bank_rows, bank):
    _, _, centre = bank
    expected: Counter[tuple[date, str]] = Counter()
    for row in bank_rows:
        if not (bank_usable(row) and bank_queued(row)):
            continue
        queued = stage_instant(row, "q_start")
        left = (queued.astimezone(UTC) + timedelta(seconds=int(row["q_time"]))).astimezone(ISRAEL)
        expected[(queued.date(), "offered")] += 1
        expected[(left.date(), "answered" if row["outcome"] == "AGENT" else "abandoned")] += 1
    actual: Counter[tuple[date, str]] = Counter()
    for (tenant, _, minute), counters in centre.queue_buckets.items():
        assert tenant == "bank-test"
        day = datetime.fromtimestamp(minute / 1000, ISRAEL).date()
        for name in ("offered", "answered", "abandoned", "flowed_out"):
            if value := getattr(counters, name):
                actual[(day, name)] += value
    assert actual == expected
    assert len({day for day, _ in expected}) == 28
    assert sum(n for (_, name), n in expected.items() if name == "offered") == 18_059


def test_bank_dirty_row_rules_are_counted(bank_rows, bank):
    importer, events, _ = bank
    skipped: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    event_count = 0
    for row in bank_rows:
        outcome, queued, served = row["outcome"], bank_queued(row), bank_served(row)
        if outcome == "PHANTOM":
            skipped["phantom"] += 1
            continue
        if outcome == "HANG" and not queued:
            skipped["hang_in_vru"] += 1
            continue
        if outcome == "AGENT" and not queued and not served:
            skipped["agent_without_service_or_queue"] += 1
            continue
        if int(row["vru_time"]) < 0:
            rules["negative_vru_time"] += 1
        if queued and row["q_start"] == "0:00:00":
            rules["queue_start_at_midnight"] += 1
        event_count += queued + (outcome == "HANG")
        stages = ["q_start", "q_exit"] if queued else []
        if outcome == "HANG" and served:
            rules["hang_with_service_start"] += 1
        if outcome == "AGENT":
            event_count += 1 + 2 * served
            if row["server"] == "NO_SERVER":
                rules["agent_no_server"] += 1
            if queued and not served:
                rules["agent_without_service"] += 1
            if served:
                stages += ["ser_start", "ser_exit"]
            if queued and served:
                skew = abs(secs(row["ser_start"]) - secs(row["q_exit"]))
                skew = min(skew, 86_400 - skew)
                if skew:
                    rules[
                        "service_start_skew_over_2s" if skew > 2 else f"service_start_skew_{skew}s"
                    ] += 1
        if any(abs(secs(row[s]) - secs(row["vru_entry"])) > 43_200 for s in stages):
            rules["crossed_midnight"] += 1
    summary = importer.summary
    assert summary.records == len(bank_rows)
    assert summary.skipped == skipped
    assert summary.rules == rules
    assert summary.events == len(events) == event_count
    # The counts on the real file, as reported:
    assert skipped == {"phantom": 278, "hang_in_vru": 1941, "agent_without_service_or_queue": 21}
    assert rules["negative_vru_time"] == 23 and rules["hang_with_service_start"] == 97
    assert rules["agent_no_server"] == 491 and rules["agent_without_service"] == 29


def test_bank_events_are_valid_wire_events_with_stable_ids(bank):
    _, events, _ = bank
    stream = io.BytesIO()
    sink = NdjsonSink(stream)
    for event in events:
        sink.write(event)
    body = stream.getvalue()
    decoded, errors = decode_batch(body)
    assert errors == [] and len(decoded) == len(events)
    ids = [event.event_id for event in decoded]
    assert len(set(ids)) == len(ids)
    for event in decoded:
        assert isinstance(event, CallLegEvent)
        kind = type(event).__struct_config__.tag.removeprefix("call.")
        assert event.event_id == f"anonymous-bank/{event.call_id}/{kind}"
    # Instants keep the Israel offset of the source clock.
    assert b'"occurred_at":"1999-02-01T07:02:55+02:00"' in body
    # Re-reading our own NDJSON gives the same events back.
    again = list(NdjsonImporter().events(io.StringIO(body.decode())))
    assert [encode_event(e) for e in again] == [encode_event(e) for e in events]


def test_bank_header_is_required():
    with pytest.raises(ImporterError, match="missing columns"):
        list(AnonymousBankImporter().events(["a\tb\n", "1\t2\n"]))


# -- Asterisk: the PBXware CSV export -------------------------------------------------


@pytest.fixture(scope="module")
def asterisk_rows() -> list[dict[str, str]]:
    with ASTERISK_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def asterisk() -> tuple[QueueLogImporter, list[Event], Centre]:
    importer = QueueLogImporter(tenant_id="pbx-test")
    with ASTERISK_CSV.open(newline="") as handle:
        events = list(importer.events(handle))
    return importer, events, feed(events)


def test_asterisk_export_waits_and_talk_match_htime_and_ttime(asterisk_rows, asterisk):
    _, _, centre = asterisk
    calls: dict[str, list[dict[str, str]]] = {}
    for row in asterisk_rows:
        if row["queue_name"] != "NONE" and row["callid"] not in ("NONE", "MANAGER"):
            calls.setdefault(row["callid"], []).append(row)
    kinds = {"CONNECT": ANSWERED, "ABANDON": ABANDONED, "EXITWITHTIMEOUT": FLOWED_OUT}
    ends = {"COMPLETEAGENT", "COMPLETECALLER", "BLINDTRANSFER", "ATTENDEDTRANSFER"}
    seen: Counter[str] = Counter()
    for callid, rows in calls.items():
        if not any(r["event"] == "ENTERQUEUE" for r in rows):
            continue
        leg = centre.legs[("pbx-test", callid, "IT", 1)]
        offered, outcome, handle, transfer = leg.contribution
        assert offered is not None
        outcome_rows = [r for r in rows if r["event"] in kinds]
        end_rows = [r for r in rows if r["event"] in ends]
        if not outcome_rows:
            assert outcome is None and leg.waiting
            seen["waiting"] += 1
            continue
        (out,) = outcome_rows
        # The wait is the outcome verb's own hold time (CONNECT's, ABANDON's waittime...).
        assert outcome is not None
        assert (outcome[1], outcome[2]) == (kinds[out["event"]], int(out["htime"]) * 1000)
        seen[out["event"]] += 1
        if end_rows:
            (end,) = end_rows
            assert handle is not None
            assert handle[1:] == (out["type"].split("/")[1], int(end["ttime"]) * 1000, 0, 0)
            assert (transfer is not None) == ("TRANSFER" in end["event"])
            seen[end["event"]] += 1
        else:
            assert handle is None
    assert seen == {
        "CONNECT": 93,
        "COMPLETEAGENT": 51,
        "COMPLETECALLER": 38,
        "ABANDON": 12,
        "EXITWITHTIMEOUT": 1,
        "BLINDTRANSFER": 1,
        "ATTENDEDTRANSFER": 1,
        "waiting": 2,
    }


def test_asterisk_export_summary_and_agents(asterisk_rows, asterisk):
    importer, events, _ = asterisk
    summary = importer.summary
    assert summary.records == len(asterisk_rows) == 1000
    mapped = {
        "ENTERQUEUE",
        "CONNECT",
        "COMPLETEAGENT",
        "COMPLETECALLER",
        "ABANDON",
        "EXITWITHTIMEOUT",
        "BLINDTRANSFER",
        "ATTENDEDTRANSFER",
        "ADDMEMBER",
        "REMOVEMEMBER",
        "AGENTCALLBACKLOGIN",
        "AGENTCALLBACKLOGOFF",
    }
    ignored = Counter(r["event"] for r in asterisk_rows if r["event"] not in mapped)
    assert summary.skipped == {f"ignored_verb:{verb}": n for verb, n in ignored.items()}
    assert summary.skipped["ignored_verb:RINGNOANSWER"] == 360
    # CONNECT and COMPLETE* logged in different seconds than Asterisk's own talk start.
    talk_skews = 0
    by_call: dict[str, dict[str, dict[str, str]]] = {}
    for r in asterisk_rows:
        by_call.setdefault(r["callid"], {})[r["event"]] = r
    for rows in by_call.values():
        for verb in ("COMPLETEAGENT", "COMPLETECALLER"):
            if verb in rows and "CONNECT" in rows:
                elapsed = int(rows[verb]["date_time"]) - int(rows["CONNECT"]["date_time"])
                talk_skews += elapsed != int(rows[verb]["ttime"])
    assert summary.rules == {"talk_end_from_calltime": talk_skews} and talk_skews == 4
    agents = {e.agent_id for e in events if isinstance(e, CallAnswered | AgentStateChanged)}
    assert agents == {"1109", "1126", "1127", "1128", "1141", "1144"}
    text = b"".join(encode_event(e) for e in events)
    assert b"CID-" not in text  # caller ids never leave the importer


# -- Asterisk: stock pipe lines, verb by verb ----------------------------------------


def run(lines: list[str], **options: Any) -> tuple[list[dict[str, Any]], QueueLogImporter]:
    importer = QueueLogImporter(tenant_id="t1", **options)
    events = [json.loads(encode_event(e)) for e in importer.events(lines)]
    return events, importer


def utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    """(type, instant, the fields that matter) of an event."""
    extra: dict[str, Any]
    if event["event_type"] == "agent.state_changed":
        extra = {k: event[k] for k in ("agent_id", "state", "queues")}
        if event["reason"] is not None:
            extra["reason"] = event["reason"]
    else:
        extra = {k: event[k] for k in ("agent_id", "reason") if k in event}
        if event.get("caller_key") is not None:
            extra["caller_key"] = event["caller_key"]
        if event["visit"] != 1:
            extra["visit"] = event["visit"]
    return (event["event_type"], event["occurred_at"], extra)


def agent(at: int, state: str, queues: tuple[str, ...] = (), reason: str | None = None) -> tuple:
    extra: dict[str, Any] = {"agent_id": "8007", "state": state, "queues": list(queues)}
    if reason is not None:
        extra["reason"] = reason
    return ("agent.state_changed", utc(at), extra)


T = 1_700_000_000
ENTER = f"{T}|1700000000.1|sales|NONE|ENTERQUEUE||+15551234567|1\n"
CONNECT = f"{T + 12}|1700000000.1|sales|SIP/8007|CONNECT|12|1700000012.7|4\n"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [ENTER],
            [("call.queued", utc(T), {})],
            id="ENTERQUEUE",
        ),
        pytest.param(
            [ENTER, CONNECT],
            [
                ("call.queued", utc(T), {}),
                ("call.answered", utc(T + 12), {"agent_id": "8007"}),
                agent(T + 12, "on_call"),
            ],
            id="CONNECT",
        ),
        pytest.param(
            [ENTER, CONNECT, f"{T + 100}|1700000000.1|sales|SIP/8007|COMPLETECALLER|12|88|1\n"],
            [
                ("call.queued", utc(T), {}),
                ("call.answered", utc(T + 12), {"agent_id": "8007"}),
                agent(T + 12, "on_call"),
                ("call.ended", utc(T + 100), {}),
                ("call.wrapup_ended", utc(T + 100), {}),
                agent(T + 100, "available"),
            ],
            id="COMPLETECALLER",
        ),
        pytest.param(
            # Logged one second after answer + calltime: the end follows calltime.
            [ENTER, CONNECT, f"{T + 101}|1700000000.1|sales|SIP/8007|COMPLETEAGENT|13|88|1\n"],
            [
                ("call.queued", utc(T), {}),
                ("call.answered", utc(T + 12), {"agent_id": "8007"}),
                agent(T + 12, "on_call"),
                ("call.ended", utc(T + 100), {}),
                ("call.wrapup_ended", utc(T + 100), {}),
                agent(T + 101, "available"),
            ],
            id="COMPLETEAGENT-skewed",
        ),
        pytest.param(
            [ENTER, f"{T + 30}|1700000000.1|sales|NONE|ABANDON|2|3|30\n"],
            [("call.queued", utc(T), {}), ("call.abandoned", utc(T + 30), {})],
            id="ABANDON",
        ),
        pytest.param(
            [ENTER, f"{T + 300}|1700000000.1|sales|NONE|EXITWITHTIMEOUT|1|1|300\n"],
            [("call.queued", utc(T), {}), ("call.flowed_out", utc(T + 300), {"reason": "timeout"})],
            id="EXITWITHTIMEOUT",
        ),
        pytest.param(
            [ENTER, f"{T + 9}|1700000000.1|sales|NONE|EXITWITHKEY|5|1|1|9\n"],
            [("call.queued", utc(T), {}), ("call.flowed_out", utc(T + 9), {"reason": "key"})],
            id="EXITWITHKEY",
        ),
        pytest.param(
            [ENTER, f"{T + 2}|1700000000.1|sales|NONE|EXITEMPTY|1|1|2\n"],
            [("call.queued", utc(T), {}), ("call.flowed_out", utc(T + 2), {"reason": "empty"})],
            id="EXITEMPTY",
        ),
        pytest.param(
            [
                ENTER,
                CONNECT,
                f"{T + 50}|1700000000.1|sales|SIP/8007|TRANSFER|200|default|12|38|1\n",
            ],
            [
                ("call.queued", utc(T), {}),
                ("call.answered", utc(T + 12), {"agent_id": "8007"}),
                agent(T + 12, "on_call"),
                ("call.transferred", utc(T + 50), {}),
                ("call.ended", utc(T + 50), {}),
                ("call.wrapup_ended", utc(T + 50), {}),
                agent(T + 50, "available"),
            ],
            id="TRANSFER",
        ),
        pytest.param(
            [
                ENTER,
                CONNECT,
                f"{T + 60}|1700000000.1|sales|SIP/8007|BLINDTRANSFER|200|default|12|47|1\n",
            ],
            [
                ("call.queued", utc(T), {}),
                ("call.answered", utc(T + 12), {"agent_id": "8007"}),
                agent(T + 12, "on_call"),
                ("call.transferred", utc(T + 60), {}),
                ("call.ended", utc(T + 59), {}),
                ("call.wrapup_ended", utc(T + 59), {}),
                agent(T + 60, "available"),
            ],
            id="BLINDTRANSFER",
        ),
        pytest.param(
            [
                ENTER,
                CONNECT,
                f"{T + 70}|1700000000.1|sales|SIP/8007|ATTENDEDTRANSFER|LINK|SIP/a|SIP/b|12|58|1\n",
            ],
            [
                ("call.queued", utc(T), {}),
                ("call.answered", utc(T + 12), {"agent_id": "8007"}),
                agent(T + 12, "on_call"),
                ("call.transferred", utc(T + 70), {}),
                ("call.ended", utc(T + 70), {}),
                ("call.wrapup_ended", utc(T + 70), {}),
                agent(T + 70, "available"),
            ],
            id="ATTENDEDTRANSFER",
        ),
        pytest.param(
            [ENTER, f"{T + 15}|1700000000.1|sales|SIP/8007|RINGNOANSWER|15000\n"],
            [("call.queued", utc(T), {})],
            id="RINGNOANSWER",
        ),
        pytest.param(
            [
                ENTER,
                f"{T + 5}|1700000000.1|sales|NONE|EXITWITHTIMEOUT|1|1|5\n",
                f"{T + 6}|1700000000.1|sales|NONE|ENTERQUEUE||+15551234567|1\n",
                f"{T + 8}|1700000000.1|sales|NONE|ABANDON|1|1|2\n",
            ],
            [
                ("call.queued", utc(T), {}),
                ("call.flowed_out", utc(T + 5), {"reason": "timeout"}),
                ("call.queued", utc(T + 6), {"visit": 2}),
                ("call.abandoned", utc(T + 8), {"visit": 2}),
            ],
            id="second-visit",
        ),
        pytest.param(
            [
                f"{T}|NONE|sales|Local/8007@agents/n|ADDMEMBER|\n",
                f"{T + 1}|NONE|support|SIP/8007|ADDMEMBER|\n",
                f"{T + 2}|NONE|NONE|SIP/8007|PAUSEALL|lunch\n",
                f"{T + 2}|NONE|sales|SIP/8007|PAUSE|lunch\n",
                f"{T + 3}|NONE|sales|SIP/8007|UNPAUSE|\n",
                f"{T + 4}|NONE|sales|SIP/8007|REMOVEMEMBER|\n",
                f"{T + 5}|NONE|support|SIP/8007|REMOVEMEMBER|\n",
                f"{T + 6}|NONE|NONE|Agent/8007|AGENTLOGIN|SIP/8007\n",
                f"{T + 7}|NONE|NONE|Agent/8007|AGENTLOGOFF|SIP/8007|1\n",
            ],
            [
                agent(T, "available", ("sales",)),
                agent(T + 1, "available", ("sales", "support")),
                agent(T + 2, "aux", ("sales", "support"), reason="lunch"),
                agent(T + 3, "available", ("sales", "support")),
                agent(T + 4, "available", ("support",)),
                agent(T + 5, "offline"),
                agent(T + 6, "available"),
                agent(T + 7, "offline"),
            ],
            id="member-events",
        ),
    ],
)
def test_pipe_verb_mapping(lines, expected):
    events, _ = run(lines)
    assert [brief(e) for e in events] == expected
    for event in events:
        if event["event_type"].startswith("call."):
            assert event["tenant_id"] == "t1" and event["queue_id"] == "sales"
            assert event["call_id"] == "1700000000.1"
            kind = event["event_type"].removeprefix("call.")
            assert event["event_id"] == f"asterisk/1700000000.1/sales/{event['visit']}/{kind}"


def test_pipe_talk_and_wait_through_the_core():
    lines = [
        ENTER,
        CONNECT,
        f"{T + 101}|1700000000.1|sales|SIP/8007|COMPLETEAGENT|13|88|1\n",
    ]
    importer = QueueLogImporter(tenant_id="t1")
    centre = feed(list(importer.events(lines)))
    _, outcome, handle, _ = centre.legs[("t1", "1700000000.1", "sales", 1)].contribution
    assert outcome is not None and outcome[1:3] == (ANSWERED, 12_000)  # CONNECT's holdtime
    assert handle is not None and handle[1:] == ("8007", 88_000, 0, 0)  # COMPLETE's calltime
    assert importer.summary.rules == {"talk_end_from_calltime": 1}


def test_pipe_caller_number_is_keyed_or_dropped():
    secret = b"tenant-1-secret"
    expected = hmac.new(secret, b"+15551234567", hashlib.sha256).hexdigest()
    (keyed,), _ = run([ENTER], caller_secret=secret)
    assert keyed["caller_key"] == expected
    (dropped,), _ = run([ENTER])
    assert dropped["caller_key"] is None
    assert "5551234567" not in json.dumps([keyed, dropped])


def test_pipe_bad_lines_are_counted_with_their_line_numbers():
    lines = [
        "garbage\n",
        "\n",
        f"{T}|c1|sales|NONE|ENTERQUEUE||123\n",
        "notanumber|c1|sales|NONE|ABANDON|1|1|3\n",
        f"{T + 5}|NONE|sales|NONE|ABANDON|1|1|3\n",
        f"{T + 6}|c1|sales|NONE|COMPLETECALLER|1|x|1\n",
        f"{T + 7}|c2|sales|NONE|CONNECT|1|x|1\n",
        f"{T + 8}|c3|NONE|NONE|ABANDON|1|1|1\n",
        f"{T + 9}|NONE|NONE|NONE|QUEUESTART|\n",
    ]
    events, importer = run(lines)
    assert [e["event_type"] for e in events] == ["call.queued"]
    summary = importer.summary
    assert summary.records == 8
    assert summary.skipped == {
        "malformed_line": 3,
        "no_call_id": 1,
        "no_agent": 1,
        "no_queue": 1,
        "ignored_verb:QUEUESTART": 1,
    }
    assert [index for index, _ in summary.errors] == [1, 4, 5, 6, 7, 8]


def test_pipe_reimport_gives_the_same_event_ids():
    lines = [ENTER, CONNECT, f"{T + 100}|1700000000.1|sales|SIP/8007|COMPLETECALLER|12|88|1\n"]
    first, _ = run(lines)
    second, _ = run(lines)
    assert [e["event_id"] for e in first] == [e["event_id"] for e in second]
    assert len({e["event_id"] for e in first}) == len(first)


# -- Following a live queue_log ---------------------------------------------------------


def test_follow_yields_lines_as_they_arrive_across_rotation_and_truncation(tmp_path):
    path = tmp_path / "queue_log"
    path.write_text(f"{T}|a|q|NONE|ENTERQUEUE||1\n")
    stop = threading.Event()
    guard = threading.Timer(15, stop.set)  # bounds the test if something never arrives
    tail = FileTail(path, poll_s=0.02, stop=stop)
    importer = QueueLogImporter(tenant_id="t1")
    first_seen = threading.Event()
    writer_done = threading.Event()
    problems: list[str] = []

    def append(text: str) -> None:
        with path.open("a") as handle:
            handle.write(text)

    def writer() -> None:
        try:
            if not first_seen.wait(5):
                problems.append("the first line was not yielded before more were written")
                return
            append(f"{T + 3}|a|q|SIP/7|CONNECT|3|x|1\n")
            time.sleep(0.1)
            append(f"{T + 10}|a|q|SIP/7|COMPLE")  # half a line: nothing until the rest
            time.sleep(0.1)
            old = path.open("a")
            os.rename(path, tmp_path / "queue_log.1")
            # The rotated file ends with that line completed but without its newline: it
            # is still a whole record once the file is known to be rotated away.
            old.write("TECALLER|3|7|1")
            old.close()
            time.sleep(0.1)
            path.write_text(f"{T + 20}|b|q|NONE|ENTERQUEUE||2\n{T + 21}|b|q|NONE|ABANDON|1|1|1\n")
            time.sleep(0.1)
            with path.open("r+") as handle:  # copytruncate: the file restarts, shorter
                handle.truncate(0)
            append(f"{T + 30}|c|q|NONE|ENTERQUEUE||3\n")
        finally:
            writer_done.set()

    thread = threading.Thread(target=writer)
    guard.start()
    thread.start()
    received: list[tuple[str, str]] = []
    try:
        for event in importer.events(tail.lines()):
            if isinstance(event, CallLegEvent):
                received.append((event.call_id, event.event_id.rsplit("/", 1)[1]))
                first_seen.set()
                if event.call_id == "c":
                    stop.set()
    finally:
        stop.set()
        guard.cancel()
        thread.join(5)
    assert problems == []
    assert writer_done.is_set()
    assert received == [
        ("a", "queued"),
        ("a", "answered"),
        ("a", "ended"),
        ("a", "wrapup_ended"),
        ("b", "queued"),
        ("b", "abandoned"),
        ("c", "queued"),
    ]
    assert (tail.rotations, tail.truncations) == (1, 1)
    assert importer.summary.skipped == {}  # no half line was read as a record


# -- NDJSON ------------------------------------------------------------------------------


def test_ndjson_bad_lines_are_reported_with_index_and_reason():
    good = {
        "schema_version": "1.0",
        "event_id": "e1",
        "event_type": "call.queued",
        "occurred_at": "2026-03-01T09:00:00+01:00",
        "tenant_id": "t",
        "source": "s",
        "call_id": "c",
        "queue_id": "q",
    }
    lines = [
        json.dumps(good),
        "",
        "{not json",
        json.dumps({**good, "event_type": "call.teleported"}),
        json.dumps({**good, "occurred_at": "2026-03-01T09:00:00"}),
        json.dumps([good]),
        json.dumps({**good, "event_id": "e2"}),
    ]
    importer = NdjsonImporter()
    events = list(importer.events(lines))
    assert [e.event_id for e in events] == ["e1", "e2"]
    summary = importer.summary
    assert (summary.records, summary.events, summary.skipped) == (6, 2, {"invalid_event": 4})
    assert [index for index, _ in summary.errors] == [3, 4, 5, 6]
    reasons = dict(summary.errors)
    assert reasons[4].startswith("$.event_type: unknown event_type")
    assert reasons[5].startswith("$.occurred_at")


def test_ndjson_replay_keeps_the_original_spacing_divided_by_speed():
    base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    offsets = [0, 10, 5, 20]  # seconds; the third is out of order
    lines = [
        json.dumps(
            {
                "schema_version": "1.0",
                "event_id": f"e{i}",
                "event_type": "call.queued",
                "occurred_at": (base + timedelta(seconds=s)).isoformat(),
                "tenant_id": "t",
                "source": "s",
                "call_id": f"c{i}",
                "queue_id": "q",
            }
        )
        for i, s in enumerate(offsets)
    ]
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    released: list[tuple[str, float]] = []
    for event in replay(NdjsonImporter().events(lines), 10.0, clock=lambda: now[0], sleep=sleep):
        released.append((event.event_id, now[0]))
    assert released == [("e0", 100.0), ("e1", 101.0), ("e2", 101.0), ("e3", 102.0)]
    assert sleeps == [1.0, 1.0]
    # Without a speed: no waiting at all.
    assert [e.event_id for e in replay(NdjsonImporter().events(lines), None, sleep=sleep)] == [
        "e0",
        "e1",
        "e2",
        "e3",
    ]
    assert sleeps == [1.0, 1.0]


# -- The command line --------------------------------------------------------------------


def test_cli_imports_the_asterisk_export_to_ndjson(tmp_path, capsys, monkeypatch, asterisk_rows):
    monkeypatch.setenv("CALLPULSE_CALLER_KEY_SECRET", "pbx-secret")
    out = tmp_path / "events.ndjson"
    status = main(
        ["import", "asterisk-queue-log", str(ASTERISK_CSV), "--tenant", "acme", "--out", str(out)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "records read: 1000" in printed
    assert "ignored_verb:RINGNOANSWER: 360" in printed
    events, errors = decode_batch(out.read_bytes())
    assert errors == []
    assert {e.tenant_id for e in events} == {"acme"}
    first_caller = next(r["param1"] for r in asterisk_rows if r["event"] == "ENTERQUEUE")
    expected_key = hmac.new(b"pbx-secret", first_caller.encode(), hashlib.sha256).hexdigest()
    queued = [e for e in events if isinstance(e, CallQueued)]
    assert len(queued) == 108
    assert queued[0].caller_key == expected_key
    assert b"CID-" not in out.read_bytes()


def test_cli_writes_anonymous_bank_events_in_time_order(tmp_path, capsys, bank_rows):
    out = tmp_path / "bank.ndjson"
    assert main(["import", "anonymous-bank", str(BANK_TSV), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"records read: {len(bank_rows)}" in printed and "phantom: 278" in printed
    events, errors = decode_batch(out.read_bytes())
    assert errors == []
    assert f"events emitted: {len(events)}" in printed
    instants = [e.occurred_at for e in events]
    assert instants == sorted(instants)
    assert {e.tenant_id for e in events} == {"anonymous-bank"}
    # Within a leg, the order of kinds survives the sort (queued, answered, ended, wrap-up).
    order = {"call.queued": 0, "call.answered": 1, "call.abandoned": 1, "call.ended": 2}
    last: dict[str, int] = {}
    for event in events:
        assert isinstance(event, CallLegEvent)
        rank = order.get(type(event).__struct_config__.tag, 3)
        assert rank >= last.get(event.call_id, -1), event
        last[event.call_id] = rank


def test_cli_replays_ndjson_to_stdout(tmp_path, capsys):
    source = tmp_path / "in.ndjson"
    source.write_text(
        json.dumps(
            {
                "schema_version": "1.0",
                "event_id": "e1",
                "event_type": "call.abandoned",
                "occurred_at": "2026-03-01T09:00:00Z",
                "tenant_id": "t",
                "source": "s",
                "call_id": "c",
                "queue_id": "q",
            }
        )
        + "\nnot json\n"
    )
    assert main(["import", "ndjson", str(source), "--out", "-", "--speed", "1000"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["event_id"] == "e1"
    assert "invalid_event: 1" in captured.err and "  2: $: JSON is malformed" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import", "ndjson", "x.ndjson", "--follow"], "--follow is only supported"),
        (["import", "anonymous-bank", "x.tsv", "--speed", "2"], "--speed is only supported"),
        (["import", "ndjson", "x.ndjson", "--speed", "0"], "--speed must be positive"),
        (["import", "ndjson", "x.ndjson", "--tenant", "t"], "carry their own tenant_id"),
        (["import", "ndjson", "/nonexistent/x.ndjson"], "cannot read"),
        (["import", "asterisk-queue-log", "x", "--url", "http://h"], "--url needs --key"),
    ],
)
def test_cli_user_errors(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("CALLPULSE_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # the relative names below do not exist there
    assert main(argv) == 2
    assert message in capsys.readouterr().err
