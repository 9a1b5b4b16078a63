"""SIGKILL a `callpulse run` process while an alert fires, and restart it: the firing notice
is not sent again as a new notice, and the resolution (stuck in the outbox at the time of a
second kill) is delivered exactly once after the next restart. Once means once per
delivery id: a kill between the receiver's acceptance and the commit of `delivered_at` may
re-send that delivery, under the same id, for the receiver to drop (services/alerts/dispatch.py)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from services.store.keys import new_key
from services.store.sqlite import SqliteStore
from tests.alerting import Receiver, receiver
from tests.conftest import Process
from tests.factories import event_dict

SECRET = "restart-secret"


def admin_key(data_dir: Path) -> dict[str, str]:
    data_dir.mkdir(parents=True)
    token, record = new_key(None, "admin", "restart test", int(time.time() * 1000))
    store = SqliteStore(data_dir / "store.db")
    store.put_key(record)
    store.close()
    return {"Authorization": f"Bearer {token}"}


def notices(r: Receiver) -> list[tuple[str, str]]:
    """The notices received, as a receiver following the contract sees them: a request
    repeating a delivery id already received is dropped (the dispatcher re-sends a notice
    whose acceptance it could not record before a crash, under the same delivery id)."""
    out = []
    seen: dict[str, bytes] = {}
    for req in r.on("/hook"):
        signature = hmac.new(
            SECRET.encode(),
            req.headers["x-callpulse-timestamp"].encode() + b"." + req.body,
            hashlib.sha256,
        ).hexdigest()
        assert req.headers["x-callpulse-signature"] == f"sha256={signature}"
        delivery = req.headers["x-callpulse-delivery"]
        if delivery in seen:
            assert req.json() == msgspec.json.decode(seen[delivery])  # the same notice again
            continue
        seen[delivery] = req.body
        body = req.json()
        out.append((body["notice"], body["alert"]["id"]))
    return out


def until(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_no_duplicate_and_no_lost_notice_across_sigkill(
    process: Callable[[str], Process], tmp_path: Path
) -> None:
    node = process("node")
    headers = admin_key(node.data_dir)
    with receiver() as r:
        rules = tmp_path / "alerts.toml"
        rules.write_text(
            '[[rules]]\nrule_id = "crowded"\ntenant_id = "t-crash"\nqueue_id = "q"\n'
            'metric = "calls_waiting"\nop = ">="\nthreshold = 2.0\nfor_s = 1\n'
            '[[recipients]]\nrecipient_id = "lead-hook"\ntenant_id = "t-crash"\n'
            f'channel = "webhook"\naddress = "{r.url}/hook"\n'
        )
        env = {
            "CALLPULSE_ALERTS_RULES_FILE": str(rules),
            "CALLPULSE_ALERTS_WEBHOOK_SECRET": SECRET,
            "CALLPULSE_ALERTS_TICK_S": "0.2",
            "CALLPULSE_ALERTS_RETRY_BASE_S": "0.2",
        }
        node.start(env=env)
        now = datetime.now(UTC)
        calls = [{"tenant_id": "t-crash", "queue_id": "q", "call_id": f"c{i}"} for i in range(3)]
        queued = [event_dict("call.queued", now - timedelta(seconds=2), **c) for c in calls]
        post = httpx.post(
            f"{node.url}/v1/events", content=msgspec.json.encode(queued), headers=headers
        )
        assert post.status_code == 202, post.text
        until(lambda: len(r.on("/hook")) >= 1)
        [(kind, alert_id)] = notices(r)
        assert kind == "firing"

        # 1. killed while firing: after the restart, no second firing notice
        node.kill()
        node.start(env=env)
        node.wait_caught_up()
        time.sleep(2.0)  # ten evaluation ticks
        assert notices(r) == [("firing", alert_id)]
        open_alerts = httpx.get(f"{node.url}/v1/alerts?tenant=t-crash", headers=headers).json()
        assert [(a["id"], a["state"]) for a in open_alerts["alerts"]] == [(alert_id, "firing")]

        # 2. the calls are answered while the receiver is down: the resolution waits in the
        #    outbox; killed then, it is delivered once after the restart
        r.status = 500
        answered = [
            event_dict("call.answered", datetime.now(UTC), agent_id="a", **c) for c in calls
        ]
        post = httpx.post(
            f"{node.url}/v1/events", content=msgspec.json.encode(answered), headers=headers
        )
        assert post.status_code == 202

        def resolution_retried() -> bool:
            rows = httpx.get(
                f"{node.url}/v1/alert-deliveries?tenant=t-crash&state=pending", headers=headers
            ).json()["deliveries"]
            return any(d["kind"] == "resolved" and d["attempts"] >= 1 for d in rows)

        until(resolution_retried)
        node.kill()
        r.status = 200
        node.start(env=env)
        until(lambda: len(r.on("/hook")) >= 2)
        time.sleep(1.5)
        assert notices(r) == [("firing", alert_id), ("resolved", alert_id)]
        done = httpx.get(f"{node.url}/v1/alerts?tenant=t-crash&state=all", headers=headers)
        [alert] = done.json()["alerts"]
        assert alert["state"] == "resolved" and alert["resolved_at"] is not None
        delivered = httpx.get(
            f"{node.url}/v1/alert-deliveries?tenant=t-crash&state=delivered", headers=headers
        ).json()["deliveries"]
        assert sorted(d["kind"] for d in delivered) == ["firing", "resolved"]
        node.kill()
