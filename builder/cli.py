"""The `builder` command line. Thin: each command calls one function; errors are caught once, here."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder import __version__, catalog
from builder.errors import BuilderError, ConfigError

console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages hold paths: never hard-wrap them


def _echo(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


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


@cli.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@_targets_option(multiple=True)
@click.option("--runner", type=click.Choice(["auto", "docker", "local"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("build"), show_default=True)
@click.option("--variant", "variants", multiple=True, help="build only these variants (repeatable)")
@click.option("--offline", is_flag=True, help="use only the download cache, never the network")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="recipe x target runs in parallel")
@click.option("--rebuild", is_flag=True, help="rebuild images even if up to date (docker)")
@click.option("--install-from", type=click.Choice(["wheelhouse", "index"]), default="wheelhouse", show_default=True,
              help="how images get packages (docker): host-side wheelhouse, or pip in the build")
@click.option("--ca-bundle", type=click.Path(path_type=Path), help="CA bundle trusted by pip and downloads")
def run(recipes, targets, runner, out, variants, offline, jobs, rebuild, install_from, ca_bundle) -> None:
    """Build, benchmark and validate RECIPES for the target(s)."""
    from builder.matrix import run_matrix
    from builder.run import verdict
    from builder.runners.select import select_runner

    chosen = select_runner(runner, ca_bundle=ca_bundle, rebuild=rebuild, install_from=install_from, echo=_echo)
    outcomes = run_matrix([Path(r) for r in recipes], list(targets), chosen, out=out,
                          variants=list(variants) or None, offline=offline, jobs=jobs, echo=_echo)
    verdict(outcomes)


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_targets_option()
@click.option("--variant", "variants", multiple=True)
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
def plan(recipe, target, variants, as_json) -> None:
    """Show the resolved steps, images and outputs without running anything."""
    from builder.plan import make_plan
    from builder.plan_view import show_plan

    resolved = make_plan(catalog.load_recipe(recipe, target), catalog.load_target(target), variants=list(variants) or None)
    if as_json:
        click.echo(json.dumps(resolved.to_json(), indent=1))
    else:
        show_plan(resolved, console)


@cli.command()
@_targets_option()
@click.option("--out", type=click.Path(path_type=Path), help="write <stage>.Dockerfile files here instead of stdout")
def render(target, out) -> None:
    """Print the rendered Dockerfile(s) of a target."""
    from builder.images import render_target

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
def build(targets, rebuild, install_from, ca_bundle) -> None:
    """Build the toolchain and device images of the target(s) without running anything."""
    from builder.docker_api import Engine
    from builder.image_build import ImageBuilder
    engine = Engine.connect()
    builder = ImageBuilder(engine, ca_bundle=ca_bundle, rebuild=rebuild, install_from=install_from, echo=_echo)
    for target_id in targets:
        for role, info in builder.ensure_target(catalog.load_target(target_id), engine.platform).items():
            _echo(f"{target_id} {role}: {info['tag']} {info['id'][:19]}")


@cli.command()
@click.argument("names", nargs=-1)
def lock(names) -> None:
    """Re-resolve dockerfiles/locks/<name>.in into <name>.txt (default: all), on purpose."""
    from builder import locks

    for name in names or locks.lock_names():
        _echo(f"{name}: {locks.write_lock(name)}")


@cli.command()
@click.option("--ca-bundle", type=click.Path(path_type=Path))
def doctor(ca_bundle) -> None:
    """Check the engine, arm64 emulation, disk, proxy, CA and pip settings; print the fix for each problem."""
    from builder.doctor import checks

    problems = 0
    for check in checks(ca_bundle):
        mark = "[green]✓[/green]" if check.ok else "[red]✗[/red]"
        console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}")
        if not check.ok:
            problems += 1
            if check.fix:
                console.print(f"    fix: {escape(check.fix)}")
    if problems:
        raise SystemExit(1)


@cli.command()
def targets() -> None:
    """List the shipped targets."""
    table = Table("id", "platform", "format", "runtime", "precisions", "name")
    for t in catalog.load_targets().values():
        table.add_row(t.id, t.platform, t.format, t.runtime, ", ".join(t.precisions), t.name)
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
    paths = list(paths) or [catalog.targets_dir(), catalog.recipes_dir()]
    problems = catalog.validate_paths(paths)
    if problems:
        for p in problems:
            err.print(f"[red]✗[/red] {escape(p)}")
        raise ConfigError(f"{len(problems)} problem(s) found")
    _echo(f"all valid: {', '.join(str(p) for p in paths)}")


@cli.command()
@click.argument("kind", type=click.Choice(["recipe", "target"]))
def schema(kind) -> None:
    """Print the JSON Schema of recipe or target files (for editors)."""
    from builder.config.recipe import Recipe
    from builder.config.target import Target

    model = Recipe if kind == "recipe" else Target
    click.echo(json.dumps(model.model_json_schema(), indent=1))


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@_targets_option()
@click.option("--runner", type=click.Choice(["auto", "docker", "local"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("build/verify"), show_default=True)
@click.option("--variant", "variants", multiple=True)
def verify(recipe, target, runner, out, variants) -> None:
    """Build twice from clean and compare every artifact's sha256 (reproducibility)."""
    from builder.runners.select import select_runner
    from builder.verify import verify as verify_twice

    chosen = select_runner(runner, echo=_echo)
    verify_twice(recipe, target, chosen, out=out, variants=list(variants) or None, echo=_echo)


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
