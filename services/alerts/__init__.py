"""Alerts for team leads: rule evaluation (the pure core in `services.kpi.alerts`) driven
over live figures, an outbox of notices in the store, and delivery to email, webhooks,
Slack, Microsoft Teams and Alertmanager."""
