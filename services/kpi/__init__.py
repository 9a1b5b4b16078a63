"""The pure KPI core: event model, leg state machine, counters, contracts, windows, gauges.

No I/O and no clock: every function takes the instants it needs as arguments
(integer milliseconds since the Unix epoch, UTC, unless a name says otherwise).
"""
