"""Tenant administration outside the API: the bootstrap file and the CLI commands."""
