"""Errors a user can fix; the CLI prints them as one line instead of a stack trace."""


class ProfilingError(Exception):
    """Base class of the errors below."""


class ConfigError(ProfilingError, ValueError):
    """A configuration file or override is unusable; the message names the key and the file."""


class InputError(ProfilingError, ValueError):
    """An input file cannot be read as its contract says; the message names the file and column."""


class MissingStageOutput(ProfilingError, LookupError):
    """A stage needs a table, snapshot or model that an earlier stage has not written yet."""


class WorkdirBusy(ProfilingError, RuntimeError):
    """Another process holds the workdir's embedded catalog; the message names it."""


class TrainingFailed(ProfilingError, RuntimeError):
    """A training process died or raised; the message says how to resume from the last checkpoint."""
