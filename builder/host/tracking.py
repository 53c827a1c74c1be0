"""The tracking store: the only module that imports MLflow (the `track` extra). It writes TrackedRuns
(tracked_runs.py) and reads them back: the last passing run of a variant, a recipe's history.

Only a build asked to be tracked imports it (cli.py), so a plain `builder run` never loads MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests import RequestException
from sqlalchemy.exc import SQLAlchemyError

from builder.errors import BuilderError
from builder.host.tracked_runs import BUILD_TAG, EXPERIMENT, KEY_TAG, StoredRun, TrackedRun
from builder.records import Results, load_results

BATCH = 100  # MLflow takes at most 100 params or tags and 1000 metrics in one call
# A team server that is down should cost a build seconds, not MLflow's minutes of retries, and a download of a
# run's results.json draws no progress bar; the user's own settings of these win.
_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
# What a store that is down or refuses a run raises: MLflow's own, its HTTP client's, its database's.
STORE_ERRORS = (MlflowException, RequestException, SQLAlchemyError, OSError)


def _named(method):
    """A store's failure as one BuilderError naming the store."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except STORE_ERRORS as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise BuilderError(f"tracking store {self.uri}: {message.splitlines()[0] if message else type(exc).__name__}",
                               hint="check that the store is up and the URI right (--track, $MLFLOW_TRACKING_URI or "
                                    "the project's edge-builder.yaml)") from None
    return call


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


class Store:
    """An MLflow tracking store: a server (http://...) or a database (sqlite:///...) opened in this process."""

    def __init__(self, uri: str):
        for name, value in _DEFAULTS.items():
            os.environ.setdefault(name, value)
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its database set-up lines are not the build's
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri
        self.client = self._connect()

    @_named
    def _connect(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)  # a database is opened (and made) here, a server on first use

    def _artifact_root(self) -> Path | None:
        """A database opened here keeps the runs' files beside it; a server decides where its own go."""
        parsed = urlparse(self.uri)
        return Path(parsed.path).parent / "artifacts" if parsed.scheme == "sqlite" else None

    def _experiment(self, name: str, create: bool) -> str | None:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        if not create:
            return None
        root = self._artifact_root()
        return self.client.create_experiment(name, artifact_location=root and str(root / name.replace("/", "_")))

    def _runs(self, experiment: str, where: list[str], *, newest_first: bool = True, limit: int = 1000) -> list:
        return self.client.search_runs([experiment], " and ".join(where), run_view_type=ViewType.ACTIVE_ONLY,
                                       max_results=limit,
                                       order_by=[f"attributes.start_time {'DESC' if newest_first else 'ASC'}"])

    @_named
    def log(self, run: TrackedRun, folder: Path) -> bool:
        """Log one variant of a build, with the run folder's files; False if the store already holds it whole.
        A run a failed attempt left unfinished is replaced."""
        experiment = self._experiment(run.experiment, create=True)
        for earlier in self._runs(experiment, [f"tags.`{KEY_TAG}` = {_quote(run.key)}"]):
            if earlier.info.status == "FINISHED":
                return False
            self.client.delete_run(earlier.info.run_id)
        created = self.client.create_run(experiment, start_time=run.started_ms, run_name=run.name,
                                         tags=run.tags | {KEY_TAG: run.key})
        run_id = created.info.run_id
        try:
            params = [Param(k, v) for k, v in run.params.items()]
            metrics = [Metric(k, v, run.started_ms, 0) for k, v in run.metrics.items()]
            for i in range(0, max(len(params), len(metrics)), BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH])
            for name in run.artifacts:
                self.client.log_artifact(run_id, str(folder / name))
        except BaseException:
            with contextlib.suppress(*STORE_ERRORS):  # the store may be what failed: its own error is the one to tell
                self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED", end_time=run.finished_ms)
        return True

    def _stored(self, run) -> StoredRun:
        return StoredRun(run_id=run.info.run_id, started_ms=run.info.start_time, params=dict(run.data.params),
                         metrics=dict(run.data.metrics), tags=dict(run.data.tags))

    @_named
    def history(self, recipe: str, target: str, device: str | None = None) -> list[StoredRun]:
        """Every finished run of the recipe on the target (on one device, if given), oldest first."""
        experiment = self._experiment(EXPERIMENT.format(recipe=recipe), create=False)
        if experiment is None:
            return []
        where = [f"params.target = {_quote(target)}", "attributes.status = 'FINISHED'"]
        where += [f"params.device = {_quote(device)}"] if device else []
        return [self._stored(r) for r in self._runs(experiment, where, newest_first=False, limit=10_000)]

    @_named
    def last_good(self, recipe: str, target: str, device: str, variant: str, before_ms: int | None,
                  other_than: str | None) -> StoredRun | None:
        """The newest passing run of a variant of the recipe on the target and device, started before
        `before_ms` and of another build than `other_than` (the build it is compared with)."""
        experiment = self._experiment(EXPERIMENT.format(recipe=recipe), create=False)
        if experiment is None:
            return None
        where = [f"params.target = {_quote(target)}", f"params.device = {_quote(device)}",
                 f"params.variant = {_quote(variant)}", "tags.status = 'ok'", "attributes.status = 'FINISHED'"]
        where += [f"attributes.start_time < {before_ms}"] if before_ms else []
        found = [r for r in self._runs(experiment, where, limit=50)
                 if r.data.tags.get(BUILD_TAG) != other_than]
        return self._stored(found[0]) if found else None

    @_named
    def results(self, run: StoredRun) -> Results:
        """The results.json logged with a run."""
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run.run_id, "results.json", tmp)
            return load_results(Path(path))
