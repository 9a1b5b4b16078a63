"""The root of the alert service's exceptions."""


class AlertError(Exception):
    """Something the alert service could not do; subclasses say what."""
