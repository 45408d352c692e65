"""One error hierarchy for the whole project, and the exit codes of `fraudctl`.

Every error the project raises on purpose is a `FraudError`; its class says what went wrong and which exit
code a command ends with. Runners (the CLI, the local runner, the Airflow DAG) call `exit_code_for()` on
whatever they caught instead of looking at class names:

    FraudError                     1  any failure we diagnosed (the message says what to do)
    +-- DataRejected               4  the data cannot be used; nothing was trained or pushed; retrying the
    |   |                             same data fails the same way
    |   +-- DataContractError         the input violates the data contract (columns, types, timestamps...)
    |   |   +-- OutOfOrderEvent       the online feature state was given an event older than its history
    |   |   +-- DuplicateTransaction  the online feature state saw a transaction id twice
    |   +-- DataValidationError       TFDV found anomalies or drift (the message names each)
    +-- DataSourceError            1  the database cannot be reached or read (URL shown without password)
    +-- ModelNotFound              1  no pushed model where one was expected
    +-- ModelRejected              1  training ended with a model that learned nothing (validation ROC-AUC below
    |                                 the floor): an error, not a candidate; nothing is evaluated or pushed
    +-- ReportError                1  the evaluation report cannot be built
    +-- LostRows                   1  a data-processing job gave fewer (or more) rows than it read (a runner fault)
    +-- SettingsError              2  a setting is missing or invalid (names the option, variable or file key)
    +-- ServingError               -  a model-server request failed with a canonical status (serving.errors)

Exit codes: 0 pushed, 1 failure, 2 usage / settings, 3 the model was not blessed (nothing pushed), 4 data
rejected. The subclasses that are also ValueErrors stay catchable as ValueError, as before.
"""
from __future__ import annotations

EXIT_PUSHED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_BLESSED = 3
EXIT_DATA_REJECTED = 4


class FraudError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = EXIT_FAILED


class DataRejected(FraudError):
    """The data cannot be used: nothing downstream runs, and the same data would fail the same way."""

    exit_code = EXIT_DATA_REJECTED


class DataContractError(DataRejected, ValueError):
    """The input violates the data contract; the message says what to fix."""


class OutOfOrderEvent(DataContractError):
    """An event older than the newest one the online state has recorded for its entity."""


class DuplicateTransaction(DataContractError):
    """A transaction id the online state has already recorded."""


class DataValidationError(DataRejected):
    """The data failed validation (TFDV anomalies or drift); the message names each anomaly."""

    def __init__(self, message: str, anomalies: tuple[str, ...] | list[str] = ()):
        super().__init__(message)
        self.anomalies = tuple(anomalies)

    @property
    def anomaly_count(self) -> int:
        return len(self.anomalies)


class DataSourceError(FraudError, ValueError):
    """The database cannot be reached or opened; the message names it (without password) and what to check."""


class ModelNotFound(FraudError, ValueError):
    """No (complete) model where one was expected."""


class ModelRejected(FraudError):
    """The Trainer's model is no model: its validation ROC-AUC is below the floor (the message gives both)."""


class LostRows(FraudError):
    """A data-processing job's output does not hold every input row exactly once; the message names the split."""


class ReportError(FraudError, ValueError):
    """The report cannot be built (no metadata, unknown run); the message says why."""


class SettingsError(FraudError, ValueError):
    """Settings are missing or invalid; the message names the option, variable or file key to fix."""

    exit_code = EXIT_USAGE


def _chain(exc: BaseException | None) -> list[BaseException]:
    """The exception and its causes, as Python's traceback shows them (`raise ... from None` ends the chain)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + _subclasses(sub)
    return out


def _boundary_markers() -> list[tuple[str, type]]:
    """How each class appears in a traceback that crossed a process boundary, most specific first.

    A Beam worker (DirectRunner multi-processing, a remote runner) or a TFX launcher that runs a component in
    another process re-raises an error of its own (RuntimeError, ...) whose text is the worker's traceback,
    where our exception shows as '<module>.<Class>: <message>'. The markers are derived from the classes
    themselves, so a new subclass is recognised without changing this function.
    """
    classes = sorted(_subclasses(FraudError), key=lambda c: -len(c.__mro__))
    return [(f"{c.__module__}.{c.__qualname__}: ", c) for c in classes]


def error_class(exc: BaseException) -> type | None:
    """The FraudError class behind `exc` (itself, its cause chain, or a traceback text in it), or None."""
    chain = _chain(exc)
    for e in chain:  # the outermost FraudError says most about what the caller was doing
        if isinstance(e, FraudError):
            return type(e)
    text = "\n".join(str(e) for e in chain)
    for marker, cls in _boundary_markers():
        if marker in text:
            return cls
    return None


def exit_code_for(exc: BaseException) -> int:
    """The exit code for any exception: its FraudError's code (also across a process boundary), else 1."""
    cls = error_class(exc)
    return cls.exit_code if cls is not None else EXIT_FAILED


def is_data_rejected(exc: BaseException) -> bool:
    cls = error_class(exc)
    return cls is not None and issubclass(cls, DataRejected)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of the chain: where the failure started."""
    return _chain(exc)[-1]


def root_message(exc: BaseException) -> str:
    root = root_cause(exc)
    return f"{type(root).__name__}: {root}"
