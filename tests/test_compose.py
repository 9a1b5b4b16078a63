"""deploy/docker-compose.yml, checked statically (no Docker engine runs in CI).

The file parses; images are pinned; every CallPulse service's environment consists of
variables its settings object reads (compared with the pydantic-settings classes and their
env prefix) and, with the values of deploy/.env.example, validates against it; nothing a
service needs to reach another container is left at a loopback default; healthchecks,
restart policies, dependencies, ports and volumes are consistent; the topic creation,
gateway, Prometheus and Alertmanager configurations agree with the code.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.bus.kafka import DEFAULT_DLQ_TOPIC, DEFAULT_EVENTS_TOPIC, DEFAULT_SNAPSHOTS_TOPIC
from services.cli import build_parser
from services.distributed.settings import (
    AggregatorSettings,
    ApiSettings,
    IngestSettings,
    MigrateSettings,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
#: The settings object each `callpulse` subcommand builds (services/distributed/command.py).
SETTINGS: dict[str, type[BaseSettings]] = {
    "migrate": MigrateSettings,
    "ingest": IngestSettings,
    "aggregator": AggregatorSettings,
    "api": ApiSettings,
}
ONE_SHOT = {"migrate", "kafka-topics"}


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


_REF = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    $VAR, and $$ for a literal $. A required variable that is missing raises."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is None:
            if op in (":-", "-"):
                return arg
            raise KeyError(f"${{{name}}} is not set ({arg or 'required'})")
        return value

    return _REF.sub(one, value)


def _load() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _resolved(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_resolved(x, env) for x in node]
    if isinstance(node, dict):
        return {k: _resolved(v, env) for k, v in node.items()}
    return node


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _ours(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from the repository's Dockerfile, by name."""
    return {n: s for n, s in doc["services"].items() if "build" in s}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    resolved: dict[str, Any] = _resolved(_load(), _env_example())
    return resolved


def test_the_file_parses_and_every_image_is_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {
        "kafka",
        "kafka-topics",
        "timescaledb",
        "migrate",
        "ingest",
        "aggregator",
        "api",
        "gateway",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, (name, image)
        if "build" in service:
            assert (
                COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]
            ).is_file()
    images = {n: s["image"].rpartition(":")[0] for n, s in services.items()}
    assert images["kafka"] == "apache/kafka"
    assert images["timescaledb"] == "timescale/timescaledb"
    assert images["grafana"] == "grafana/grafana"
    assert services["grafana"]["image"].rpartition(":")[2].startswith("11.")
    assert set(_ours(compose)) == {"migrate", "ingest", "aggregator", "api"}
    # KRaft, no ZooKeeper.
    kafka = _environment(services["kafka"])
    assert "broker" in kafka["KAFKA_PROCESS_ROLES"] and "controller" in kafka["KAFKA_PROCESS_ROLES"]
    assert not any("zookeeper" in n.lower() for n in services)


def test_our_services_read_every_variable_they_are_given(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    parser_commands = _cli_commands()
    for name, service in _ours(compose).items():
        (command,) = service["command"]
        assert command in parser_commands, (name, command)
        settings_class = SETTINGS[command]
        prefix = settings_class.model_config.get("env_prefix", "")
        fields = {prefix.upper() + f.upper(): f for f in settings_class.model_fields}
        env = _environment(service)
        unknown = set(env) - set(fields)
        assert not unknown, f"{name}: {sorted(unknown)} are not read by {settings_class.__name__}"
        # With the example values, the settings object accepts them.
        for key in [k for k in list(os.environ) if k.startswith(prefix.upper())]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = settings_class()
        # Nothing another container must reach stays on loopback.
        for field, default in settings_class.model_fields.items():
            raw = default.default
            text = raw.get_secret_value() if hasattr(raw, "get_secret_value") else str(raw)
            if "127.0.0.1" in text and field not in ("metrics_port",):
                assert prefix.upper() + field.upper() in env, f"{name}: set {field}"
        if command in ("ingest", "api"):
            assert settings.host == "0.0.0.0"  # type: ignore[attr-defined]
        if command == "ingest":
            assert settings.caller_key_secret is not None  # type: ignore[attr-defined]


def _cli_commands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {str(name) for name in cast(dict[str, Any], sub.choices)}


def test_healthchecks_restart_policies_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        restart = service.get("restart")
        if name in ONE_SHOT:
            assert restart == "no", name
            continue
        assert restart in ("unless-stopped", "always"), name
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        for depends in service.get("depends_on", {}):
            assert depends in services, (name, depends)
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, target)
            else:
                assert condition in ("service_healthy", "service_started"), (name, target)
    # Everything touching the store waits for the schema; everything touching Kafka for topics.
    for name in ("ingest", "aggregator", "api"):
        deps = services[name]["depends_on"]
        assert {"migrate", "kafka-topics"} <= set(deps), name
    assert "migrate" in services["grafana"]["depends_on"]


def test_healthchecks_and_ports_match_what_the_services_listen_on(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in _ours(compose).items():
        if name in ONE_SHOT:
            continue
        env = _environment(service)
        port = env.get("CALLPULSE_PORT") or env.get("CALLPULSE_METRICS_PORT")
        assert port, name
        probe = " ".join(service["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in probe, (name, probe)
        assert service.get("expose") == [port], name
        assert "ports" not in service, f"{name}: replicas cannot share a host port"
    host_ports = []
    for name, service in services.items():
        for mapping in service.get("ports", []):
            parts = mapping.split(":")
            host_ports.append(parts[-2])
            assert parts[-1].isdigit(), (name, mapping)
    assert len(host_ports) == len(set(host_ports)), host_ports
    gateway = (DEPLOY / "gateway" / "nginx.conf").read_text(encoding="utf-8")
    api_port = _environment(services["api"])["CALLPULSE_PORT"]
    ingest_port = _environment(services["ingest"])["CALLPULSE_PORT"]
    assert f"http://api:{api_port}" in gateway and f"http://ingest:{ingest_port}" in gateway
    assert re.search(r"location = /v1/events \{ proxy_pass \$ingest;", gateway)
    assert services["gateway"]["ports"][0].endswith(":8080") and "listen 8080;" in gateway


def test_volumes_are_declared_or_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), (name, volume)
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), (name, source)
            else:
                assert source in declared, (name, source)
                used.add(source)
    assert used == declared
    grafana = compose["services"]["grafana"]["volumes"]
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/callpulse.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert any(v.startswith("../grafana/dashboards:" + path) for v in grafana)
    assert any(v.startswith("../grafana/provisioning:/etc/grafana/provisioning") for v in grafana)


def test_env_example_and_compose_use_the_same_variables() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    referenced = {m.group(1) or m.group(4) for m in _REF.finditer(text) if m.group(0) != "$$"}
    required = {
        m.group(1) for m in _REF.finditer(text) if m.group(1) and m.group(2) in (None, ":?", "?")
    }
    example = _env_example()
    # Container-side shell variables ($${X} in the topic script) are not compose variables.
    assert required <= set(example), required - set(example)
    assert set(example) <= referenced, set(example) - referenced
    for secret in (
        "CALLPULSE_DB_PASSWORD",
        "CALLPULSE_API_DB_PASSWORD",
        "CALLPULSE_GRAFANA_DB_PASSWORD",
        "CALLPULSE_CALLER_KEY_SECRET",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} must be required"
    with pytest.raises(KeyError):
        _resolved(_load(), {})  # without deploy/.env the secrets are missing, loudly


def test_topics_are_created_as_the_code_names_them(compose: dict[str, Any]) -> None:
    topics = compose["services"]["kafka-topics"]
    env = _environment(topics)
    assert (
        env["CALLPULSE_EVENTS_TOPIC"],
        env["CALLPULSE_SNAPSHOTS_TOPIC"],
        env["CALLPULSE_DLQ_TOPIC"],
    ) == (DEFAULT_EVENTS_TOPIC, DEFAULT_SNAPSHOTS_TOPIC, DEFAULT_DLQ_TOPIC)
    script = topics["command"][0]
    for topic in ("CALLPULSE_EVENTS_TOPIC", "CALLPULSE_SNAPSHOTS_TOPIC", "CALLPULSE_DLQ_TOPIC"):
        assert f'--topic "${{{topic}}}"' in script
    assert "--if-not-exists" in script and "--replication-factor ${REPLICATION}" in script
    assert "min.insync.replicas=${MIN_ISR}" in script and "cleanup.policy=compact" in script
    # Every service names the same topics as the topic job creates.
    for name, service in _ours(compose).items():
        for key, value in _environment(service).items():
            if key in env:
                assert value == env[key], (name, key)
    assert int(env["PARTITIONS"]) >= int(compose["services"]["aggregator"]["deploy"]["replicas"])


def test_grafana_gets_every_variable_its_provisioning_expands(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["grafana"])
    for path in (ROOT / "grafana" / "provisioning").rglob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if path.name == "rules.yaml":
            continue  # alert queries keep $__ macros; their annotations use no env vars
        for name in re.findall(r"\$\{(\w+)\}", text):
            assert env.get(name), f"{path.name}: ${{{name}}} is not set for grafana"


def test_prometheus_and_alertmanager_configurations_are_valid() -> None:
    for args in (
        ["promtool", "check", "config", str(DEPLOY / "prometheus/prometheus.compose.yml")],
        ["amtool", "check-config", str(DEPLOY / "alertmanager/alertmanager.yml")],
    ):
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.compose.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "callpulse"]
    scraped = {(c["names"][0], c["port"]) for c in job["dns_sd_configs"]}
    doc = _resolved(_load(), _env_example())
    for name, service in _ours(doc).items():
        if name in ONE_SHOT:
            continue
        env = _environment(service)
        port = int(env.get("CALLPULSE_PORT") or env["CALLPULSE_METRICS_PORT"])
        assert (name, port) in scraped, name


def test_dockerfile_is_pinned_and_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for base in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    assert 'ENTRYPOINT ["callpulse"]' in text and "USER callpulse" in text
    assert ".[distributed]" in text
    init = (DEPLOY / "timescaledb" / "init-roles.sh").read_text(encoding="utf-8")
    from services.store.pg_schema import SchemaOptions

    options = SchemaOptions()
    assert f"CREATE ROLE {options.api_role} " in init
    assert f"CREATE ROLE {options.grafana_role} " in init
