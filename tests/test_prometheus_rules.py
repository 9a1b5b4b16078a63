"""The Prometheus alerting rules: `promtool check rules` and `promtool test rules` (Debian's
`prometheus` package; a missing promtool fails, it is never skipped), and every metric the
rules use is one CallPulse exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

from tests.conftest import ROOT, Service
from tests.factories import event

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (scripts/test.sh does)"
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert "SUCCESS: 14 rules found" in out


def test_promtool_check_config() -> None:
    out = promtool("check", "config", str(RULES.parent / "prometheus.yml"))
    assert "is valid prometheus config file syntax" in out


def test_promtool_test_rules() -> None:
    out = promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in out


async def test_the_rules_use_only_exported_metrics(service: Service) -> None:
    now = datetime.now(UTC) - timedelta(seconds=30)
    # "today" is the local day of the tenant's zone: one where it is about noon now, so that
    # the call (the last 30 s) and the scrape fall in the same day at any hour (not at 00:00 UTC).
    east = 12 - now.hour  # hours east of UTC, -11 .. 12
    service.contract(tenant_id="t-metrics", version=1, timezone=f"Etc/GMT{-east:+d}")
    c = {"tenant_id": "t-metrics", "queue_id": "q", "call_id": "call-1"}
    await service.embedded.backend.ingest(
        [
            event("call.queued", now, **c),
            event("call.answered", now + timedelta(seconds=3), agent_id="agent-9", **c),
            event("call.ended", now + timedelta(seconds=20), agent_id="agent-9", **c),
            event("call.wrapup_ended", now + timedelta(seconds=25), agent_id="agent-9", **c),
        ]
    )
    await service.settle()
    service.embedded.aggregator.step()  # one batch observed by the pipeline histograms
    text = (await service.client.get("/metrics")).text
    exported = set(re.findall(r"^(callpulse_[a-z_]+)", text, re.MULTILINE))
    used = set(re.findall(r"\b(callpulse_[a-z_]+)", RULES.read_text()))
    assert used, "no CallPulse metric in the rules?"
    assert used - exported == set()
    # naming: callpulse_<subsystem>_<name>[_<unit>]; bounded labels, no call or agent ids
    assert all(re.fullmatch(r"callpulse_[a-z]+_[a-z_]+", name) for name in exported)
    assert "call-1" not in text and "agent-9" not in text
    assert (
        'callpulse_kpi_service_level_ratio{queue="q",tenant="t-metrics",window="today"} 1.0' in text
    )
