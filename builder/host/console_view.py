"""What `builder run` shows while it runs: a live view on a terminal, the plain lines anywhere else.

The view reads the lines the driver and the runners echo (stage headers, `  > id`, `  < id ok (1.2 s)`,
`  cached: id`, image build lines) and the fetchers' download callback. On a terminal it draws each
recipe/target's current stage with its steps, its download and the image builds in a rich Live area,
and prints what must stay above it: warnings, errors, each stage once it is over, and with -v the
tools' own output. In CI logs, pipes, with NO_COLOR or TERM=dumb it prints the lines as they come.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
MARKS = {"ok": ("✓", "green"), "failed": ("✗", "bold red"), "skipped": ("-", "yellow"), "cached": ("↺", "cyan"),
         "unfinished": ("…", "dim")}

PAIR = re.compile(r"\[(?P<recipe>[^\]]+?) / (?P<target>[^\]]+?)\] (?P<rest>.*)", re.S)  # a message may hold lines
STAGE = re.compile(r"(?P<stage>\w+) stage \((?P<where>.*)\)")
ALL_CACHED = re.compile(r"\w+ stage: every step cached, nothing to run")
STEP_ID = r"(?P<id>\d+-\S+)"
PATTERNS = {  # the stripped line (the docker runner indents its container's lines) -> what it says
    "start": re.compile(rf"> {STEP_ID}"),
    "end": re.compile(rf"< {STEP_ID} (?P<mark>ok|FAILED|skipped) \((?P<seconds>[\d.]+) s\)(?:: (?P<error>.*))?"),
    "cached": re.compile(rf"cached: {STEP_ID} \((?P<note>.*)\)"),
    "runs": re.compile(rf"runs: {STEP_ID} \((?P<note>.*)\)"),
    "log": re.compile(r"(?P<level>info|warning|error|critical): (?P<message>.*)", re.S),
    "build": re.compile(r"building (?P<tag>\S+) \(.*"),
    "build_line": re.compile(r"\[\s*[\d.]+s\] (?P<message>.*)"),
    "built": re.compile(r"built \S+ in .*"),
}


@dataclass
class Step:
    id: str
    status: str = "running"  # waiting (to run again), running, ok, failed, skipped, cached, unfinished
    seconds: float | None = None
    note: str = ""  # the last info line while it runs, the error once it failed, when it ran if cached
    started: float = field(default_factory=time.monotonic)


@dataclass
class Download:
    message: str
    done: int = 0
    total: int | None = None


@dataclass
class Pair:
    """One recipe/target: its current phase (fetching, a stage) and that phase's steps."""
    name: str
    phase: str = "starting"
    steps: dict[str, Step] = field(default_factory=dict)
    download: Download | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class Build:
    tag: str
    line: str = ""
    started: float = field(default_factory=time.monotonic)


class ConsoleView:
    """The echo of a run: `view(line)`; `view.of(recipe, target)` is the echo of one recipe/target's lines.

    Use it as a context manager: the live area is drawn between enter and exit."""

    def __init__(self, console: Console, *, verbose: bool = False, live: bool | None = None):
        self.console = console
        self.verbose = verbose
        self.live = (console.is_interactive and not console.no_color) if live is None else live
        self._pairs: dict[str, Pair] = {}
        self._builds: dict[int, Build] = {}  # by thread: a build's lines come from the thread that builds it
        self._lock = threading.Lock()
        self._display = Live(console=console, get_renderable=self.render, transient=True, refresh_per_second=8) \
            if self.live else None

    def __enter__(self) -> ConsoleView:
        if self._display:
            self._display.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._display:
            with self._lock:  # an error or Ctrl-C: what was under way stays on screen, marked unfinished
                blocks = [self._close_phase(pair) for pair in self._pairs.values()]
                self._pairs.clear()
                self._builds.clear()
            self._print([b for b in blocks if b])
            self._display.stop()

    def __call__(self, line: str) -> None:
        self._line(line)

    def of(self, recipe: str, target: str):
        """The echo of one recipe/target: its step lines carry no name, so they are told apart by echo."""
        return RunLines(self, f"{recipe} / {target}") if self.live else self

    def _line(self, line: str, pair: str | None = None) -> None:
        if not self.live:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        with self._lock:
            shown = self._take(line, pair)
        self._print(shown)

    def _download(self, pair: str, message: str, done: int, total: int | None) -> None:
        with self._lock:
            finished = total is not None and done >= total  # a fetcher without a size ends with the next line
            self._pair(pair).download = None if finished else Download(message, done, total)

    # --- reading the lines ---------------------------------------------------------------------------

    def _take(self, line: str, pair: str | None) -> list[RenderableType]:
        """Update the state from one line; return what to print above the live area."""
        text = line.strip()
        if match := PAIR.fullmatch(text):
            return self._pair_line(f"{match['recipe']} / {match['target']}", match["rest"], line)
        kind, match = next(((k, m) for k, p in PATTERNS.items() if (m := p.fullmatch(text))), (None, None))
        state = self._pairs.get(pair) if pair else None
        if kind in ("start", "end", "cached", "runs") and state is not None:
            state.download = None
            step = state.steps.setdefault(match["id"], Step(match["id"]))
            if kind == "start":
                step.status, step.started = "running", time.monotonic()
            elif kind == "end":
                step.status, step.seconds = match["mark"].lower(), float(match["seconds"])
                step.note = match["error"] or step.note  # or its last info line: a benchmark's p50
            elif kind == "cached":
                step.status, step.note = "cached", match["note"]
            else:
                step.status, step.note = "waiting", match["note"]
            return []
        if kind == "log":
            running = [s for s in state.steps.values() if s.status == "running"] if state else []
            if match["level"] == "info":
                for step in running:
                    step.note = match["message"].splitlines()[0]
                return [Text(line)] if self.verbose else []
            return [Text(line, style="yellow" if match["level"] == "warning" else "red")]
        if kind == "build":
            self._builds[threading.get_ident()] = Build(match["tag"])
        elif kind == "build_line" and (build := self._builds.get(threading.get_ident())):
            build.line = match["message"]
            return [Text(line, style="red")] if "ERROR" in line else []
        elif kind == "built":
            self._builds.pop(threading.get_ident(), None)
        return [Text(line)]  # anything else is a message worth keeping (and with -v, the tools' output)

    def _pair_line(self, name: str, rest: str, line: str) -> list[RenderableType]:
        state = self._pair(name)
        state.download = None
        if stage := STAGE.fullmatch(rest):
            block = self._close_phase(state)
            state.phase, state.started = f"{stage['stage']} stage ({stage['where']})", time.monotonic()
            return [block] if block else []
        if rest == "fetching inputs":
            state.phase = rest
            return []
        shown: list[RenderableType] = []
        if ALL_CACHED.fullmatch(rest):
            if block := self._close_phase(state):
                shown.append(block)
            return shown + [Text(line, style="dim")]
        if rest.startswith("report: ") or rest.startswith("FAILED: "):  # the end of this recipe/target
            if block := self._close_phase(state):
                shown.append(block)
            del self._pairs[name]
            return shown + [Text(line, style="dim" if rest.startswith("report: ") else "bold red")]
        return [Text(line)]

    def _pair(self, name: str) -> Pair:
        return self._pairs.setdefault(name, Pair(name))

    def _close_phase(self, state: Pair) -> Group | None:
        """The phase's block, to print for good; its steps leave the live area (any still running did not
        finish: the run stopped)."""
        if not state.steps:
            return None
        for step in state.steps.values():
            if step.status in ("running", "waiting"):
                step.status = "unfinished"
        block = self._block(state, time.monotonic())
        state.steps = {}
        state.phase = ""
        return block

    # --- drawing -------------------------------------------------------------------------------------

    def _print(self, shown: list[RenderableType]) -> None:
        """Above the live area: never while holding the lock (the live area's refresh takes it)."""
        if shown and self._display:
            self._display.refresh()  # a print redraws the live area as last refreshed: bring it up to date first
        for item in shown:
            self.console.print(item, highlight=False, soft_wrap=True)

    def render(self) -> RenderableType:
        """The live area: a line per recipe/target, step, download and image build, each cut to the width."""
        now = time.monotonic()
        rows: list[Text] = []
        with self._lock:
            for state in self._pairs.values():
                rows.append(_head(state, now, live=True))
                width = max((len(step_id) for step_id in state.steps), default=0)
                for step in state.steps.values():
                    mark, seconds, note = _step_parts(step, now)
                    rows.append(Text.assemble(mark, " ", step.id.ljust(width), " ", seconds.rjust(7), " ", note))
                if d := state.download:
                    rows.append(Text.assemble((" ↓ ", "cyan"), _size(d), " ", _bar(d), " ", d.message))
            rows += [Text.assemble((_spin(now) + " ", "cyan"), f"building {b.tag}  ", (f"{now - b.started:.0f} s  ", "dim"),
                                   (b.line, "dim")) for b in self._builds.values()]
        for row in rows:
            row.no_wrap, row.overflow = True, "ellipsis"
        return Group(*rows)

    @staticmethod
    def _block(state: Pair, now: float) -> Group:
        """A finished phase, to print: long notes wrap in their column."""
        grid = Table.grid(padding=(0, 1))
        for _ in range(3):
            grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for step in state.steps.values():
            mark, seconds, note = _step_parts(step, now)
            grid.add_row(mark, step.id, seconds, note)
        return Group(_head(state, now, live=False), grid)


class RunLines:
    """The echo of one recipe/target's lines, and its fetchers' download callback."""

    def __init__(self, view: ConsoleView, pair: str):
        self.view, self.pair = view, pair

    def __call__(self, line: str) -> None:
        self.view._line(line, self.pair)

    def download(self, message: str, done: int, total: int | None) -> None:
        self.view._download(self.pair, message, done, total)


def _spin(now: float) -> str:
    return SPINNER[int(now * 12) % len(SPINNER)]


def _head(state: Pair, now: float, live: bool) -> Text:
    return Text.assemble((_spin(now) + " " if live else "", "cyan"), (state.name, "bold"), f"  {state.phase}  ",
                         (f"{now - state.started:.1f} s", "dim"))


def _step_parts(step: Step, now: float) -> tuple[Text, str, Text]:
    """A step's mark, seconds and note."""
    if step.status == "running":
        return Text(" " + _spin(now), style="cyan"), f"{now - step.started:.1f} s", Text(step.note, style="dim")
    if step.status == "waiting":
        return Text(" ·", style="dim"), "", Text(step.note, style="dim")
    mark, style = MARKS[step.status]
    seconds = "" if step.seconds is None else f"{step.seconds:.1f} s"
    label = {"failed": "FAILED", "skipped": "skipped", "cached": "cached", "unfinished": "unfinished"}.get(step.status)
    note = Text(f"{label}: {step.note}" if label and step.note else label or step.note,
                style=style if step.status in ("failed", "skipped") else "dim")
    return Text(" " + mark, style=style), seconds, note


def _size(d: Download) -> str:
    return f"{d.done / 2**20:.1f}" + (f"/{d.total / 2**20:.1f} MB" if d.total else " MB")


def _bar(d: Download, width: int = 24) -> Text:
    if not d.total:
        return Text("")
    done = round(width * min(d.done / d.total, 1))
    return Text.assemble(("━" * done, "bar.complete"), ("━" * (width - done), "bar.back"))
