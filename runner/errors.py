"""One exception root for every error runner raises on purpose."""


class RunnerError(Exception):
    """Base of runner's own errors: the message names the setting to change."""


class ConfigError(RunnerError):
    """A setting has a value runner cannot use."""


class WarehouseError(RunnerError):
    """The warehouse cannot be reached or rejected the feature query."""


class DataError(RunnerError):
    """The feature result cannot be trained on (empty, label missing or constant...)."""


class TrackingError(RunnerError):
    """The MLflow tracking server cannot be reached or refused a call."""


class CacheError(RunnerError):
    """The feature cache folder cannot be used."""


def first_line(exc: BaseException, limit: int = 500) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
