"""Errors that name the problem. Every user-facing failure is an ``FmiError``."""


class FmiError(Exception):
    """Base class: the CLI prints ``str(err)`` as one line and exits with status 2."""


class ModelUnavailableError(FmiError):
    """A registered model cannot be loaded on this machine right now."""


class UnknownModelError(FmiError):
    """A model name that is not in the registry."""


class TaskFileError(FmiError):
    """A task file that is malformed; the message names the file and the field."""


class LabelError(FmiError):
    """A label that is not exactly one token for the loaded tokenizer."""


class MemoryMismatchError(FmiError):
    """A saved memory loaded into a model it was not written with."""


class MemoryFileError(FmiError):
    """A memory file that is missing, truncated or corrupted; the message names the file."""


class EntryNotFoundError(FmiError, KeyError):
    """A memory entry id that is not in the memory."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(FmiError):
    """An invalid configuration value."""


class DeviceUnavailableError(ConfigError):
    """A device this machine does not have (``cuda`` without CUDA, ``cuda:3`` on one GPU)."""


class OutputPathError(FmiError):
    """An output path that cannot be written (a directory, under a file, not writable)."""


class Interrupted(FmiError):
    """A command stopped by SIGINT or SIGTERM; ``code`` is the exit status (130 or 143)."""

    def __init__(self, signal_name: str, code: int) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.code = code


def require_at_least(config: object, names: tuple[str, ...], minimum: int = 1) -> None:
    """``ConfigError`` naming the first field in ``names`` of ``config`` below ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")
