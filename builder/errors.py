"""The project's errors. Raised anywhere, caught once at the CLI edge.

`exit_code` 2 means the user's input is wrong (fix the file or flag);
1 means the work itself failed (a build, a step, a download);
3 means no gate was missed but one is undecided: the data cannot tell (`--accept-undecided` makes it 0).
"""

from __future__ import annotations


class BuilderError(Exception):
    """Base class: a one-line message, an optional hint, optional log tail."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, log_tail: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log_tail = log_tail or []


class ConfigError(BuilderError):
    """A recipe, target or CLI argument is invalid."""

    exit_code = 2


class FetchError(BuilderError):
    """A model or data file could not be obtained from any source."""


class ConversionError(BuilderError):
    """A converter or quantizer failed; `cause` classifies it for reports."""

    def __init__(self, message: str, *, cause: str = "conversion-failed", **kwargs):
        super().__init__(message, **kwargs)
        self.cause = cause


class StepError(BuilderError):
    """A plan step failed."""


class GpuUnavailable(StepError):
    """A GPU runtime could not start: the container does not reach the GPU (container runtime, group, driver)."""

    cause = "gpu-unavailable"


class StageDied(StepError):
    """A stage's process ended without a record of each step: it crashed, was killed or ran out of disk."""


class GateError(BuilderError):
    """A variant missed an accuracy gate set in the recipe."""


class GateUndecided(BuilderError):
    """No gate was missed, but a gate's interval straddles its threshold: the validation set cannot tell."""

    exit_code = 3


class EngineError(BuilderError):
    """The Docker engine is unreachable or refused a request."""


class EngineUnreachable(EngineError):
    """The engine does not answer (not started, connection lost mid-stage): its device is down."""


class DeviceError(StepError):
    """A device stage could not run: `cause` is device-needed or device-unavailable."""

    def __init__(self, message: str, *, cause: str, **kwargs):
        super().__init__(message, **kwargs)
        self.cause = cause


class BuildError(BuilderError):
    """An image build failed."""
