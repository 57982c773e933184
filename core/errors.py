"""Errors that reach an operator as one actionable line instead of a traceback."""


class AttendantError(Exception):
    """Base class: the message says what is wrong and, where possible, the command that fixes it."""


class ConfigError(AttendantError):
    """A config file is missing, unreadable or has a wrong value."""


class DataError(AttendantError):
    """A data file (intents, FAQ, products, orders, dialogs) is missing or malformed."""


class ArtifactError(AttendantError):
    """A built artifact (model, index, store) is missing, corrupt or does not match its config."""
