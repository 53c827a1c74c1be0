"""The `builder` command line. Thin: each command calls one function; errors are caught once, here."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder import __version__
from builder.config.common import kind_of
from builder.errors import BuilderError, ConfigError
from builder.host import catalog, container_runtimes
from builder.host.devices import FLEET_ENV, HOST

console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages hold paths: never hard-wrap them


def _echo(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def _out_directory(ctx: click.Context, param: click.Parameter, path: Path | None) -> Path | None:
    """--out is (or will be) a folder: a file there or above it is refused before anything runs."""
    for existing in [path, *path.parents] if path else []:
        if existing.exists():
            if not existing.is_dir():
                raise click.BadParameter(f"{existing} is a {kind_of(existing.stat().st_mode)}, not a directory; "
                                         "choose a folder", ctx, param)
            break
    return path


def _targets_option(multiple: bool = False):
    return click.option("--target", "-t", "targets" if multiple else "target", required=True, multiple=multiple,
                        metavar="ID", help="target id (see `builder targets`)" + ("; repeat for a matrix" if multiple else ""))


class _Group(click.Group):
    """Catches the project's errors once: one readable message, exit 2 for bad input, 1 for failures."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BuilderError as exc:
            _report(exc, bool(ctx.obj and ctx.obj.get("debug")))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-builder")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Containerized, per-target builds of edge ML models."""
    ctx.obj = {"debug": debug}


def _device_options(func):
    """--device, --fleet, --registry: where device stages run and how images get there."""
    func = click.option("--registry", metavar="HOST[:PORT]/REPO",
                        help="push images once by content-hash tag; engines that lack one pull it")(func)
    func = click.option("--fleet", type=click.Path(path_type=Path),
                        help=f"fleet file of devices (default: ${FLEET_ENV}); see `builder schema fleet`")(func)
    return click.option("--device", "devices", multiple=True, metavar="NAME|URL",
                        help="run device stages on this device (fleet name, ssh://user@host, tcp://..., "
                             "a Docker context); repeatable")(func)


def _cluster_option(func):
    return click.option("--cluster", envvar="RAY_ADDRESS", metavar="ray://HEAD:PORT",
                        help="a Ray cluster that runs the stages, boards as its resources (default: $RAY_ADDRESS; "
                             "needs `pip install 'edge-builder[cluster]'`)")(func)


def _ray(module: str):
    """A module of the cluster path: only `--cluster` imports Ray."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise ConfigError("--cluster: Ray is not installed here", hint="pip install 'edge-builder[cluster]'") from None


def _accept_undecided_option(func):
    return click.option("--accept-undecided", is_flag=True,
                        help="exit 0 when no gate is missed but some are undecided (exit 3 otherwise)")(func)


def _placement(fleet: Path | None, devices: tuple[str, ...], registry: str | None):
    """(devices, registry) from the flags and the fleet file."""
    from builder.config.fleet import check_registry
    from builder.host.devices import choose_devices, load_fleet

    loaded = load_fleet(fleet)
    try:
        registry = check_registry(registry) if registry else loaded.registry
    except ValueError as exc:
        raise ConfigError(f"--registry: {exc}") from None
    return choose_devices(loaded, list(devices)), registry


def _track_option(help_text: str, alone: bool = False):
    """--track URI (with `alone`: --track with no value too, given as ""): the tracking store, see tracking_uri.py."""
    extra = {"is_flag": False, "flag_value": ""} if alone else {}
    return click.option("--track", metavar="[URI]" if alone else "URI", default=None, help=help_text, **extra)


TRACK_BUILDS = ("log every variant to a tracking store: alone, the local one under the cache (or $MLFLOW_TRACKING_URI's, "
                "or the project's edge-builder.yaml's); with a URI, that one (an MLflow server: http://HOST:PORT)")


def _extra_measures_options(command):
    """--profile and --layer-diff, which reach the command as one `extra` (planner.ExtraMeasures)."""

    @functools.wraps(command)
    def with_extra(*args, profile: bool, layer_diff: bool, **kwargs):
        from builder.host.planner import ExtraMeasures

        return command(*args, extra=ExtraMeasures(profile=profile, layer_diff=layer_diff), **kwargs)

    with_extra = click.option("--layer-diff", is_flag=True, help=(
        "also compare each quantized variant's intermediate tensors with fp32's, layer by layer (report.md, "
        "layer_diff_<variant>.csv, Model Explorer node data)"))(with_extra)
    return click.option("--profile", is_flag=True, help=(
        "also profile each variant layer by layer after its timed runs (report.md, profile_<variant>.csv, "
        "Model Explorer node data)"))(with_extra)


def _trust_option(command):
    return click.option("--trust-remote-code", is_flag=True,
                        help="let the recipe run its own code: a model factory from outside installed packages, a "
                             "downloaded TorchScript/ExportedProgram/SavedModel")(command)


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@_targets_option(multiple=True)
@click.option("--runner", type=click.Choice(["auto", "docker", "local"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True, callback=_out_directory)
@click.option("--variant", "variants", multiple=True, help="build only these variants (repeatable)")
@click.option("--offline", is_flag=True, help="use only the download cache, never the network")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
              help="toolchain stages at once on the build host (device stages take a device each)")
@click.option("--rebuild", is_flag=True, help="rebuild images even if up to date (docker)")
@click.option("--install-from", type=click.Choice(["wheelhouse", "index"]), default="wheelhouse", show_default=True,
              help="how images get packages (docker): host-side wheelhouse, or pip in the build")
@click.option("--ca-bundle", type=click.Path(path_type=Path), help="CA bundle trusted by pip and downloads")
@click.option("--no-cache", is_flag=True, help="run every step (what runs is still kept in the step cache)")
@click.option("--remeasure", is_flag=True, help="run benchmarks and validations again, reuse the other steps")
@click.option("--verbose", "-v", is_flag=True, help="show the tools' own output (it always goes to logs/<step>.log)")
@_extra_measures_options
@_accept_undecided_option
@_device_options
@_cluster_option
@_trust_option
@_track_option(TRACK_BUILDS, alone=True)
def run(recipes, targets, runner, out, variants, offline, jobs, rebuild, install_from, ca_bundle, no_cache, remeasure,
        verbose, extra, accept_undecided, devices, fleet, registry, cluster, trust_remote_code, track) -> None:
    """Build, benchmark and validate RECIPES for the target(s).

    Steps whose kind, params, inputs and environment are unchanged are taken from
    the step cache (see `builder cache`) instead of running."""
    from builder.host.console_view import ConsoleView
    from builder.host.matrix import run_matrix
    from builder.host.run import summary, verdict
    from builder.host.runners.select import select_runner
    from builder.host.step_cache import CachePolicy, step_cache_dir
    from builder.host.tracking_uri import for_run

    store = for_run(track)
    chosen_devices, registry = _placement(fleet, devices, registry)
    if chosen_devices and runner == "local" and not cluster:  # on a cluster, a board may be a node itself
        raise ConfigError("--device/--fleet: the local runner runs on this machine only", hint="use --runner docker")
    with ConsoleView(console, verbose=verbose) as view:
        options = {"ca_bundle": ca_bundle, "rebuild": rebuild, "install_from": install_from, "registry": registry,
                   "verbose": verbose}
        chosen = select_runner("docker" if chosen_devices and runner == "auto" else runner, echo=view, **options)
        pool = None
        if cluster:
            chosen, pool = _ray("builder.host.runners.ray_runner").join(cluster, chosen, options, chosen_devices, view)
        cache = CachePolicy(step_cache_dir(), reuse=not no_cache, remeasure=remeasure)
        outcomes = run_matrix([Path(r) for r in recipes], list(targets), chosen, out=out,
                              variants=list(variants) or None, offline=offline, jobs=jobs, devices=chosen_devices,
                              cache=cache, echo=view, trust_remote_code=trust_remote_code, extra=extra,
                              pool=pool)
    if store:
        _track(outcomes, store)
    _echo("")
    for line in summary(outcomes):
        _echo(line)
    verdict(outcomes, accept_undecided=accept_undecided)


def _warn(line: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(line)}")


def _track(outcomes, store: str) -> None:
    """Each finished run into the tracking store; a store that cannot take them is a warning, never a failure."""
    from builder.host.track_builds import log_builds
    from builder.workdir import MANIFEST

    finished = [o.workdir for o in outcomes if (o.workdir / MANIFEST).is_file() and (o.workdir / "results.json").is_file()]
    log_builds(finished, store, echo=_echo, warn=_warn)


@cli.group()
def track() -> None:
    """The tracking store that `builder run --track` logs to."""


@track.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@_track_option("log into this store (default: the one the file was meant for)")
def replay(path, track) -> None:
    """Log what a build could not: PATH is a tracking-replay.json, the run folder holding one, or a --out folder."""
    from builder.host.track_builds import replay as replay_files
    from builder.host.tracking_uri import for_reading

    replay_files(path, for_reading(track) if track else None, _echo)


@cli.command()
@click.argument("recipe")
@_targets_option()
@click.option("--device", help="only the runs on this device (default: every device)")
@click.option("--html", "html_file", type=click.Path(path_type=Path),
              help="write the page of plots here (default: build/history/<recipe>_<target>.html)")
@_track_option("the tracking store (default: $MLFLOW_TRACKING_URI, the project's, else the local one)")
def history(recipe, target, device, html_file, track) -> None:
    """Each figure of each variant of RECIPE (a name or a recipe file) on TARGET over the tracked runs: a table per
    variant, and a page with a plot per figure."""
    from builder.host import history as trend
    from builder.host.track_builds import open_store
    from builder.host.tracking_uri import for_reading
    from builder.util import atomic_write_bytes

    name = catalog.load_recipe(Path(recipe), target).name if recipe.endswith((".yaml", ".yml")) else recipe
    store = open_store(for_reading(track))
    runs = store.history(name, target, device)
    if not runs:
        raise ConfigError(f"no tracked run of {name} on {target}{f' on {device}' if device else ''} in {store.uri}",
                          hint="track builds with `builder run --track`, or name the store with --track URI")
    for table in trend.tables(runs):
        console.print(table)
    html_file = html_file or Path("build") / "history" / f"{name}_{target}.html"
    atomic_write_bytes(html_file, trend.page(name, target, runs).encode())
    _echo(f"history page: {html_file}")


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_targets_option()
@click.option("--runner", type=click.Choice(["auto", "docker", "local"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True, callback=_out_directory)
@click.option("--variant", "variants", multiple=True)
@click.option("--offline", is_flag=True, help="use only the download cache, never the network")
@_trust_option
def bundle(recipe, target, runner, out, variants, offline, trust_remote_code) -> None:
    """Pack the device stage of RECIPE on TARGET for a device with Docker and no network.

    Runs the toolchain stage unless OUT already holds it for this recipe; writes
    OUT/<recipe>_<target>_device-bundle.tar.gz. On the device: unpack, `sh run.sh`;
    back here: `builder collect results.tar.gz`.
    """
    from builder.host.bundle import bundle_path, load_run_plan, toolchain_done, write_bundle
    from builder.host.image_build import ImageBuilder
    from builder.host.run import run_toolchain
    from builder.host.runners.select import select_runner

    workdir = out / catalog.load_recipe(Path(recipe), target).name / target
    if toolchain_done(workdir, Path(recipe)):
        _echo(f"toolchain stage already in {workdir}: bundling it")
    else:
        chosen = select_runner(runner, echo=_echo)
        run_toolchain(Path(recipe), target, chosen, out=out, variants=list(variants) or None, offline=offline,
                      echo=_echo, trust_remote_code=trust_remote_code)
    plan = load_run_plan(workdir)
    archive = write_bundle(plan, workdir, bundle_path(out, plan), ImageBuilder(echo=_echo), _echo)
    _echo(f"bundle: {archive}")


@cli.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True, callback=_out_directory)
@_accept_undecided_option
@_track_option(TRACK_BUILDS, alone=True)
def collect(source, out, accept_undecided, track) -> None:
    """Merge a bundle's device-stage results (its folder or results.tar.gz) into OUT and write the report."""
    from builder.host.bundle import collect as collect_bundle
    from builder.host.run import verdict
    from builder.host.tracking_uri import for_run

    store = for_run(track)
    outcome = collect_bundle(source, out, _echo)
    if store:
        _track([outcome], store)
    verdict([outcome], accept_undecided=accept_undecided)


_CHECK_FIELDS = ("device", "target", "ok", "what", "error", "hint", "cause", "default_runtime", "seconds", "emulated")
"""A device check's own fields; the others are what the check found (the runtime, its ms, its vendor's tools)."""


@cli.command()
@click.option("--fleet", type=click.Path(path_type=Path), help="fleet file (default: $EDGE_BUILDER_FLEET)")
@click.option("--json", "as_json", is_flag=True, help="print the health of every device as JSON")
@click.option("--check", "bring_up", is_flag=True,
              help="run a tiny model through each device's image as a run would, and say what is missing")
@_cluster_option
def devices(fleet, as_json, bring_up, cluster) -> None:
    """List the fleet's devices with their health: engine, platform, container runtimes, CPU, memory, disk, OS.
    With --cluster: the cluster's boards, their leases and who holds them."""
    from builder.host.devices import choose_devices, load_fleet
    from builder.host.health import check_device, device_health
    from builder.host.image_build import ImageBuilder

    if cluster:
        _ray("builder.host.cluster_view").show(cluster, as_json, console)
        return
    loaded = load_fleet(fleet)
    if not loaded.devices:
        raise ConfigError("no fleet: no devices to list", hint=f"give --fleet FILE or set {FLEET_ENV}")
    images = ImageBuilder(echo=lambda line: None)
    if bring_up:
        checks = [c for d in choose_devices(loaded, []) for c in check_device(d, images)]
        if as_json:
            click.echo(json.dumps(checks, indent=1))
        for c in [] if as_json else checks:
            mark = "[green]✓[/green]" if c["ok"] else "[red]✗[/red]"
            said = c.get("error") or ", ".join(f"{k} {v}" for k, v in c.items() if k not in _CHECK_FIELDS and v)
            said += " (emulated: QEMU on another platform)" if c.get("emulated") and c["ok"] else ""
            console.print(f"{mark} {escape(c['device'])} {escape(str(c['target'] or ''))}: {escape(c['what'])}: "
                          f"{escape(said)}" + (f" ({c['seconds']} s)" if c.get("seconds") is not None else ""))
            for key in ("hint", "default_runtime"):
                if c.get(key):
                    console.print(f"    {'fix' if key == 'hint' else 'note'}: {escape(c[key])}")
        if not all(c["ok"] for c in checks):
            raise SystemExit(1)
        return
    health = [device_health(d, images) for d in choose_devices(loaded, [])]
    if as_json:
        click.echo(json.dumps(health, indent=1))
    else:
        _health_table(health)
    if not all(h["answers"] for h in health):
        raise SystemExit(1)


def _health_table(health: list[dict]) -> None:
    """One block per device: how it is reached, then what machine answers there."""
    for h in health:
        labels = " ".join(f"{k}={v}" for k, v in h["labels"].items())
        head = f"{h['name']}  {h['engine']}  targets: {', '.join(h['targets'])}" + (f"  {labels}" if labels else "")
        if not h["answers"]:
            console.print(f"[red]✗[/red] {escape(head)}\n    [red]{escape(h['error'])}[/red]")
            continue
        m = h.get("machine") or {}
        memory = f"{h['memory_mb'] / 1024:.1f} GiB" if h.get("memory_mb") else "?"
        disk = f", free disk {m['free_disk_gb']} GB" if m.get("free_disk_gb") is not None else ""
        backends = ", ".join(f"{k} {v}" for facts in (m.get("extra") or {}).values() for k, v in facts.items()
                             if v is not None)
        console.print(f"[green]✓[/green] {escape(head)}")
        console.print(f"    {h['platform']}, {escape(str(h.get('os')))}, kernel {escape(str(h.get('kernel')))}, "
                      f"{h.get('cores')} cores, {memory}{disk}"
                      + "".join(f"; {runtime.label}: " + (f"yes (default runtime {escape(str(h.get('default_runtime')))})"
                                                           if h.get(f"{name}_runtime") else "no")
                                for name, runtime in container_runtimes.known().items()))
        console.print(f"    cpu: {escape(str(m.get('cpu_model', m.get('note', '?'))))}"
                      + (f"; {escape(m['board_model'])}" if m.get("board_model") else "")
                      + (f"; {escape(backends)}" if backends else ""))


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_targets_option()
@click.option("--variant", "variants", multiple=True)
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@click.option("--runner", type=click.Choice(["auto", "docker", "local"]), default="auto", show_default=True,
              help="the runner whose environment the cache is judged for")
@click.option("--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True, callback=_out_directory)
@click.option("--no-cache", is_flag=True, help="as `run --no-cache` would")
@click.option("--remeasure", is_flag=True, help="as `run --remeasure` would")
@_extra_measures_options
@_trust_option
def plan(recipe, target, variants, as_json, runner, out, no_cache, remeasure, extra, trust_remote_code) -> None:
    """Show the resolved steps, images and outputs without running anything, and, when OUT holds a
    previous run, which steps a run would take from the step cache (judged with the inputs it fetched)."""
    from builder.host.plan_view import show_plan
    from builder.host.planner import make_plan
    from builder.stage import source_precision

    loaded = catalog.load_recipe(recipe, target)
    local = loaded.source.file  # a local source can be inspected now; a download only once it is fetched
    quantized = source_precision.inspect(local, loaded.source.resolved_format,
                                         shown=f"{recipe}: source.file {local}") if local else None
    resolved = make_plan(loaded, catalog.load_target(target), variants=list(variants) or None, quantized=quantized,
                         trust_remote_code=trust_remote_code, extra=extra)
    previous = out / loaded.name / target
    cached = _forecast(resolved, runner, previous, no_cache, remeasure) if previous.is_dir() else None
    if as_json:
        click.echo(json.dumps(resolved.to_json() | ({"cache": cached} if cached else {}), indent=1))
    else:
        show_plan(resolved, console, cached)


def _forecast(plan, runner: str, previous: Path, no_cache: bool, remeasure: bool) -> dict[str, str]:
    from builder.host.runners.select import select_runner
    from builder.host.step_cache import StepCache, forecast, step_cache_dir
    from builder.stage.steps import registry

    chosen = select_runner(runner, echo=lambda line: None)
    identities = {stage: chosen.identity(plan, stage) for stage in ("toolchain", "device") if plan.stage_steps(stage)}
    return forecast(plan.steps, identities, StepCache(step_cache_dir()), previous, f"{plan.recipe.name}\0{plan.target.id}",
                    lambda kind: registry.get(kind).measures, reuse=not no_cache, remeasure=remeasure)


@cli.command()
@_targets_option()
@click.option("--out", type=click.Path(path_type=Path), callback=_out_directory,
              help="write <stage>.Dockerfile files here instead of stdout")
def render(target, out) -> None:
    """Print the rendered Dockerfile(s) of a target."""
    from builder.host.images import render_target

    rendered = render_target(catalog.load_target(target))
    for stage, image in rendered.items():
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{stage}.Dockerfile").write_text(image.dockerfile)
            _echo(f"{out / f'{stage}.Dockerfile'}  ({image.tag})")
        else:
            click.echo(f"# ---- {stage} image: {image.tag} ({image.platform}) ----")
            click.echo(image.dockerfile)


@cli.command()
@_targets_option(multiple=True)
@click.option("--rebuild", is_flag=True, help="build even if an image with the same content hash exists")
@click.option("--install-from", type=click.Choice(["wheelhouse", "index"]), default="wheelhouse", show_default=True,
              help="wheelhouse: host downloads locked wheels, the build needs no network; index: pip in the build")
@click.option("--ca-bundle", type=click.Path(path_type=Path), help="CA bundle trusted by pip")
@_device_options
def build(targets, rebuild, install_from, ca_bundle, devices, fleet, registry) -> None:
    """Build the toolchain and device images of the target(s) without running anything.

    The toolchain image is built on the build engine, each device image on the devices
    that run the target (with --device or a fleet), else on the build engine.
    """
    from builder.host.docker_api import Engine
    from builder.host.image_build import ImageBuilder
    from builder.host.runners.docker import DockerRunner

    chosen, registry = _placement(fleet, devices, registry)
    runner = DockerRunner(Engine.connect(), ca_bundle=ca_bundle, rebuild=rebuild, install_from=install_from,
                          registry=registry, echo=_echo)
    images: ImageBuilder = runner.images
    for target_id in targets:
        target = catalog.load_target(target_id)
        info = images.ensure_role(runner.engine, target, "toolchain")
        _echo(f"{target_id} toolchain: {info['tag']} {info['id'][:19]} on {info['engine']}")
        for device in [d for d in chosen if d.serves(target_id)] or [HOST]:
            info = images.ensure_role(runner.engine_of(device), target, "device")
            _echo(f"{target_id} device: {info['tag']} {info['id'][:19]} on {device.name} ({info['engine']})")


@cli.command()
@click.argument("names", nargs=-1)
def lock(names) -> None:
    """Re-resolve dockerfiles/locks/<name>.in into <name>.txt (default: all), on purpose."""
    from builder.host import locks

    for name in names or locks.lock_names():
        _echo(f"{name}: {locks.write_lock(name)}")


@cli.command()
@click.option("--ca-bundle", type=click.Path(path_type=Path))
@click.option("--target", "-t", "targets", multiple=True, metavar="ID",
              help="a target whose device stage is to run on this engine: what it needs is checked (repeatable)")
def doctor(ca_bundle, targets) -> None:
    """Check the engine, arm64 emulation, disk, proxy, CA and pip indexes; print the fix for each problem."""
    from builder.host.doctor import checks

    problems = 0
    for check in checks(ca_bundle, targets):
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}")
        problems += not check.ok
        if check.fix:  # an ok check may still say how to do better (a container runtime as the default)
            console.print(f"    fix: {escape(check.fix)}")
    if problems:
        raise SystemExit(1)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print the entries as JSON")
@click.pass_context
def cache(ctx, as_json) -> None:
    """Show the step cache: its size and entries (`builder cache prune` empties it by age or size)."""
    if ctx.invoked_subcommand:
        return
    from builder.host.step_cache import StepCache, step_cache_dir

    store = StepCache(step_cache_dir())
    entries = store.entries()
    if as_json:
        click.echo(json.dumps([{k: v for k, v in e.items() if k != "path"} for e in entries], indent=1))
        return
    table = Table("step kind", "entries", "size (MB)")
    for kind in sorted({e["kind"] for e in entries}):
        mine = [e for e in entries if e["kind"] == kind]
        table.add_row(kind, str(len(mine)), f"{sum(e['size'] for e in mine) / 1e6:.1f}")
    console.print(table)
    _echo(f"{step_cache_dir()}: {len(entries)} entries, {store.size() / 1e6:.1f} MB of files")


@cache.command()
@click.option("--older-than", "days", type=click.FloatRange(0), metavar="DAYS",
              help="drop entries no run has used for DAYS days")
@click.option("--max-size", "max_mb", type=click.FloatRange(0), metavar="MB",
              help="then drop the least recently used until the cache holds at most MB megabytes")
def prune(days, max_mb) -> None:
    """Drop old or least recently used entries, and the files no entry needs."""
    from builder.host.step_cache import StepCache, step_cache_dir

    if days is None and max_mb is None:
        raise ConfigError("builder cache prune: nothing to do", hint="give --older-than DAYS and/or --max-size MB")
    dropped, freed = StepCache(step_cache_dir()).prune(
        older_than_s=None if days is None else days * 86400, max_bytes=None if max_mb is None else int(max_mb * 1e6))
    _echo(f"dropped {dropped} entries, freed {freed / 1e6:.1f} MB")


@cli.command()
def targets() -> None:
    """List the shipped targets."""
    table = Table("id", "platform", "format", "runtime", "precisions", "name")
    for t in catalog.load_targets().values():
        table.add_row(t.id, t.platform, t.format, t.runtime, ", ".join(t.precisions), t.name)
    console.print(table)


@cli.command()
def formats() -> None:
    """List the model formats (the project's and the plugins'): suffix, companion files, runtime."""
    from builder import formats as registry

    table = Table("format", "suffix", "companions", "runtime")
    for f in registry.all_formats().values():
        table.add_row(f.name, f.suffix or "(folder)", ", ".join(f.companions.values()), f.runtime or "(source only)")
    console.print(table)


@cli.command()
def recipes() -> None:
    """List the shipped recipes."""
    table = Table("recipe", "task", "source", "variants", "file")
    for path in catalog.recipe_paths():
        r = catalog.load_recipe(path)
        table.add_row(r.name, r.task, f"{r.source.name} ({r.source.resolved_format})", ", ".join(r.variants),
                      str(path.relative_to(catalog.project_root())))
    console.print(table)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths) -> None:
    """Load every target and recipe (default: all shipped) and report every problem."""
    paths = list(paths) or [*sorted({f.parent for f in catalog.target_files().values()}), catalog.recipes_dir()]
    problems = catalog.validate_paths(paths)
    if problems:
        for p in problems:
            err.print(f"[red]✗[/red] {escape(p)}")
        raise ConfigError(f"{len(problems)} problem(s) found")
    _echo(f"all valid: {', '.join(str(p) for p in paths)}")


@cli.command()
@click.argument("kind", type=click.Choice(["recipe", "target", "fleet", "results"]))
def schema(kind) -> None:
    """Print the JSON Schema of recipe, target or fleet files (for editors), or of a run's results.json."""
    from builder.config.fleet import Fleet
    from builder.config.recipe import Recipe
    from builder.config.target import Target
    from builder.records import Results

    model = {"recipe": Recipe, "target": Target, "fleet": Fleet, "results": Results}[kind]
    click.echo(json.dumps(model.model_json_schema(), indent=1))


@cli.command()
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path), metavar="[OLD] NEW")
@click.option("--baseline", type=click.Choice(["last-good"]),
              help="OLD from the tracking store: each variant's last passing run on the same recipe, target and device")
@_track_option("the tracking store of --baseline (default: $MLFLOW_TRACKING_URI, the project's, else the local one)")
@click.option("--fail-on-regression", "pct", type=click.FloatRange(0), metavar="PCT",
              help="exit 1 if a figure got worse by more than PCT percent beyond the benchmark's noise, or a variant "
                   "that was ok is not")
@click.option("--html", "html_file", type=click.Path(path_type=Path),
              help="also write the comparison, with NEW's plots and OLD's p50s marked, as one self-contained page")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def compare(runs, baseline, track, pct, html_file, as_json) -> None:
    """Compare two runs, each a run folder, a matrix's --out folder or a results.json: p50, size and accuracy
    per recipe/target/variant; changes within the benchmark's noise are marked ~. With --baseline last-good, NEW
    alone is given and OLD comes from the tracking store."""
    from builder.host import compare as comparison
    from builder.util import atomic_write_bytes

    if len(runs) != (1 if baseline else 2):
        raise click.UsageError("give OLD and NEW, or NEW alone with --baseline last-good")
    if baseline:
        from builder.host.track_builds import open_store
        from builder.host.tracking_uri import for_reading

        new_runs = comparison.load(runs[0])
        old_runs = comparison.last_good(runs[0], new_runs, open_store(for_reading(track)), _warn)
    else:
        old_runs, new_runs = comparison.load(runs[0]), comparison.load(runs[1])
    rows = comparison.compare(old_runs, new_runs, pct or 0.0)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _comparison_table(rows)
    if html_file:
        from builder.host import html_report

        page = html_report.comparison_page(rows, [(run, old_runs.get(key)) for key, run in new_runs.items()])
        atomic_write_bytes(html_file, page.encode())
        _echo(f"comparison page: {html_file}")
    if pct is not None:
        comparison.check(rows, pct)


def _comparison_table(rows: list[dict]) -> None:
    table = Table("recipe / target / variant", "figure", "old", "new", "change")
    for r in rows:
        label = escape(f"{r['recipe']} / {r['target']} / {r['variant']}")
        if r["old_status"] != r["new_status"]:
            table.add_row(label, "status", r["old_status"] or "-", r["new_status"] or "-", "")
        changed = [f for f in r["figures"] if f["old"] != f["new"]]
        if not changed and r["old_status"] == r["new_status"]:
            table.add_row(label, "all", "", "", "unchanged")
        for f in changed:
            change = "" if f["change_pct"] is None else f"{f['change_pct']:+.1f}%" + (" ~noise" if f["noise"] else "")
            table.add_row(label, f["name"], f"{f['old']:.4g}", f"{f['new']:.4g}",
                          f"[red]{change}[/red]" if f["worse"] else change)
        for why in r["regression"]:
            table.add_row(label, "[red]REGRESSION[/red]", "", "", escape(why))
    console.print(table)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_targets_option()
@click.option("--runner", type=click.Choice(["auto", "docker", "local"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("build/verify"), show_default=True,
              callback=_out_directory)
@click.option("--variant", "variants", multiple=True)
@_trust_option
def verify(recipe, target, runner, out, variants, trust_remote_code) -> None:
    """Build twice from clean and compare every artifact's sha256 (reproducibility)."""
    from builder.host.runners.select import select_runner
    from builder.host.verify import verify as verify_twice

    chosen = select_runner(runner, echo=_echo)
    verify_twice(recipe, target, chosen, out=out, variants=list(variants) or None, echo=_echo,
                 trust_remote_code=trust_remote_code)


@cli.command("import")
@click.argument("tsv", type=click.Path(path_type=Path))
@click.option("--out-dir", type=click.Path(path_type=Path), default=Path("recipes/imported"), show_default=True,
              callback=_out_directory)
@click.option("--calibration", type=click.Path(path_type=Path),
              help="a folder of images to calibrate with (default: synthetic samples, said so in each recipe)")
@click.option("--offline", is_flag=True, help="read the models' input specs from the download cache only")
def import_(tsv, out_dir, calibration, offline) -> None:
    """Turn a mirrors TSV (seed 000: family, model, filename, sha256, url1..urlN) into one recipe per model.

    Each model is fetched into the download cache to read its input spec; run the recipes with
    `builder run OUT_DIR/*.yaml -t TARGET`."""
    from builder.host.importer import import_tsv

    written = import_tsv(tsv, out_dir, calibration=calibration, offline=offline, echo=_echo,
                         warn=lambda line: err.print(f"[yellow]warning:[/yellow] {escape(line)}"))
    _echo(f"{len(written)} recipe(s) in {out_dir}")


def _report(exc: BuilderError, debug: bool) -> None:
    if debug:
        err.print_exception()
    for line in exc.log_tail:
        err.print(f"  | {line}", markup=False)
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}")
    if exc.hint:
        err.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
