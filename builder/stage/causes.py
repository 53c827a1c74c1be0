"""Classify a failed step into a known cause with a hint (seed 002's conversion report), and find the line
that says what went wrong in a tool's output.

The core knows the failures any step can meet (memory, disk, network, checksums, shapes). Each backend
registers what it knows of its own tools (`register(ToolErrors(...))`): their failures' patterns, the lines
around an error that are not the error, how their messages name an unsupported op, and hints chosen by the
tool of the step that failed (`Step.tool`, in its record) and by the recipe's source format.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from builder import plugins
from builder.records import StepOutcome
from builder.stage.steps import registry


@dataclass(frozen=True)
class Rule:
    """A known cause: `pattern` found in a failure's error or log tail."""

    pattern: str
    cause: str
    hint: str
    after_core: bool = False  # tried after the core's own rules (a tool's name matches any of its failures)


@dataclass(frozen=True)
class Failure:
    """What a hint reads of a classified failure."""

    cause: str
    tool: str | None  # the failed step's tool
    ops: tuple[str, ...]  # the ops its messages name as unsupported
    source_format: str | None  # the recipe's source: hints name only options it can set


Hint = Callable[[Failure], "str | None"]


@dataclass(frozen=True)
class ToolErrors:
    """What a backend knows of its tools' failures."""

    rules: tuple[Rule, ...] = ()
    not_the_error: tuple[str, ...] = ()  # lines around a tool's error that are not it: its advice, frames, summaries
    op_names: tuple[str, ...] = ()  # group 1: the ops (", "-separated) a message names as unsupported
    hints: dict[str, Hint] = field(default_factory=dict)  # cause -> a better hint for this failure, or None


_CONTRIBUTED: list[ToolErrors] = []


def register(errors: ToolErrors) -> None:
    _CONTRIBUTED.append(errors)


def contributed() -> tuple[ToolErrors, ...]:
    plugins.load()
    return tuple(_CONTRIBUTED)


UNSUPPORTED_OP_HINT = "the runtime lacks an op: use another target, or replace the op in the source model"

FIRST_RULES = (  # the core's, tried after the backends' own
    Rule(r"custom op|Custom op|not supported by|unsupported op", "unsupported-op", UNSUPPORTED_OP_HINT),
    Rule(r"not fully quantized|float fallback|ops left in float", "not-fully-quantized",
         "set require_full_int8: false to keep float fallbacks, or replace the op"),
    Rule(r"sha256 mismatch", "checksum-mismatch", "a mirror serves different bytes: fix sha256 or the mirror list"),
    Rule(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", "tls-interception",
         "give the corporate CA bundle (--ca-bundle, SSL_CERT_FILE, PIP_CERT)"),
    Rule(r"(?i)proxy authentication required", "proxy-auth",
         "the proxy wants credentials: set HTTPS_PROXY / HTTP_PROXY to http://user:password@proxy:port, "
         "or ask for the host to be added to the proxy's allowlist"),
    Rule(r"blocked by allowlist", "allowlist",
         "use a mirror the allowlists allow, or ask the administrator to add its host to EDGE_BUILDER_ALLOWLIST "
         "(a recipe's allowlist can narrow that list, never widen it)"),
    Rule(r"dtype mismatch|Type Error|type mismatch", "dtype-mismatch",
         "check the input spec dtype and the quantization io_dtype"),
    Rule(r"shape mismatch|Shape mismatch|incompatible shape|Got invalid dimensions", "shape-mismatch",
         "fix the input shape in the recipe (input.shape) or make the model's input static"),
)
LAST_RULES = (  # the core's, tried last: any tool can end so
    Rule(r"No space left on device|ENOSPC", "disk-full",
         "free disk space where the stage ran (the engine's data root, or this host): `docker system prune`, "
         "`builder cache prune`"),
    Rule(r"Killed|MemoryError|out of memory", "out-of-memory", "give the engine more memory or reduce the batch"),
)


def rules() -> tuple[Rule, ...]:
    """Every rule in the order they are tried; the first match wins."""
    contributed_rules = [rule for errors in contributed() for rule in errors.rules]
    return (*(r for r in contributed_rules if not r.after_core), *FIRST_RULES,
            *(r for r in contributed_rules if r.after_core), *LAST_RULES)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# a tool's `ERROR:` lines; Python logging's "date time - ERROR - logger: message"
_ERROR_LINE = re.compile(r"^(?:ERROR:|\S+ \S+ - ERROR - [\w.]+:)\s*(.+)$")
_EXCEPTION_LINE = re.compile(  # ValueError: ..., onnx.checker.ValidationError: ..., struct.error: ...
    r"^(?:(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Failure|Exit)|[a-z_]\w*\.error)(?:: .+)?$")
_TRACEBACK = r"Traceback \(most recent call last\)"
_QUANTIZED_OP = re.compile(r"^(?:DynamicQuantize\w+|QLinear\w+|ConvInteger|QAttention|QGemm)$")  # ONNX's


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _not_the_error() -> re.Pattern[str]:
    return re.compile(f"^(?:{'|'.join([_TRACEBACK, *(p for e in contributed() for p in e.not_the_error)])})")


def first_error(output: str, *, any_line: bool = False) -> str | None:
    """The first line of a tool's output that states an error: an `ERROR` log line or a Python
    exception, skipping the advice and frames around it. `any_line`: every line may be the
    error (an exception's own message that spans lines)."""
    not_the_error = _not_the_error()
    for raw in strip_ansi(output).splitlines():
        line = raw.strip()
        match = _ERROR_LINE.match(line)
        text = match.group(1).strip() if match else line
        if not text or not_the_error.match(text):
            continue
        if match or any_line or _EXCEPTION_LINE.match(line):
            return text
    return None


def known_cause(text: str) -> str | None:
    return next((rule.cause for rule in rules() if re.search(rule.pattern, text)), None)


def unsupported_ops(text: str, patterns: tuple[re.Pattern[str], ...] | None = None) -> list[str]:
    """The op names a converter's message lists as unsupported, in order, once each (by every backend's
    patterns unless `patterns` are given)."""
    if patterns is None:
        patterns = tuple(re.compile(p) for errors in contributed() for p in errors.op_names)
    found: dict[str, None] = {}
    for pattern in patterns:
        for match in pattern.finditer(text):
            found.update(dict.fromkeys(match.group(1).split(", ")))
    return list(found)


def _core_hint(failure: Failure) -> str | None:
    if failure.cause != "unsupported-op":
        return None
    names = ", ".join(failure.ops) or "an op"
    if any(_QUANTIZED_OP.match(op) for op in failure.ops):
        return f"{names}: ops of an already quantized model; give the float model as the source"
    return (f"{failure.tool or 'the converter'} has no {names}: replace it in the source model, or build for a "
            "target whose runtime has it")


def _tool_of(kind: str | None) -> str | None:
    """The tool of a step kind, for a record written without it."""
    step = registry.all_steps().get(kind) if kind else None
    return step.tool if step else None


def classify(record: StepOutcome | dict, *, source_format: str | None = None) -> tuple[str, str | None]:
    """(cause, hint) for a failed or skipped step record, or any failure given as its fields (a dict);
    `source_format` (the recipe's source) keeps hints to options that source can set."""
    if isinstance(record, dict):
        record = StepOutcome.model_validate(record)
    if record.status == "skipped":  # a dependency failed, or the stage never ran (device-needed ...)
        return record.cause or "dependency-failed", (
            record.hint or "an earlier step this one needs failed; see that step")
    text = "\n".join([record.error or ""] + record.log_tail)
    cause, hint = record.cause, record.hint
    if cause in (None, "error", "crash", "conversion-failed", "stage-died"):
        rule = next((rule for rule in rules() if re.search(rule.pattern, text)), None)
        if rule is None:
            return cause or "error", hint
        cause, hint = rule.cause, hint or rule.hint
    ops = (unsupported_ops(record.error or "") or unsupported_ops(text)) if cause == "unsupported-op" else []
    failure = Failure(cause, record.tool or _tool_of(record.kind), tuple(ops), source_format)
    for better in [errors.hints[cause] for errors in contributed() if cause in errors.hints] + [_core_hint]:
        if (found := better(failure)) is not None:
            return cause, found
    return cause, hint
