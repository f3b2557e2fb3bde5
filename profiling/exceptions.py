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


class DataQualityError(ProfilingError, ValueError):
    """A log lost more rows to the quarantine than its gate allows, or a snapshot's last ingest did.

    ``result`` holds what the ingest run measured and wrote (its quality report), when there is one.
    """

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result


class IncompleteIngest(MissingStageOutput):
    """A snapshot's tables hold rows of an ingest run that did not finish."""


class NotEnoughData(ProfilingError, ValueError):
    """A stage refuses to build a model or results on less data than its configured floor."""


class QueryError(ProfilingError, ValueError):
    """A SQL query that Spark cannot parse or resolve; the message is Spark's first line."""
