"""`hub worker`: a Celery worker that executes the steps of hub runs (HUB_EXECUTOR=celery).

The same as `dagster-celery worker start -A dagster_celery.app`, with hub's broker settings read from
the environment (HUB_CELERY_BROKER_URL, HUB_CELERY_BACKEND_URL; hub_pipelines/executors.py) and the
code location imported before the pool starts, so a broken deployment fails here rather than in its
first step. A worker needs the same DAGSTER_HOME (PostgreSQL instance), HUB_WAREHOUSE_URL and landing
settings as the code server: steps write to the instance and the warehouse themselves.
"""

import os
import socket
import uuid

import click


@click.command()
@click.option(
    "--name",
    default=None,
    help="Worker node name (Celery's -n); default hub-<random>@<host>. Shown on each step's engine event.",
)
@click.option(
    "--concurrency",
    "-c",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Steps this worker runs at once (prefork processes).",
)
@click.option(
    "--queue",
    "-Q",
    "queues",
    multiple=True,
    default=("dagster",),
    show_default=True,
    help="Queues to consume (steps tagged dagster-celery/queue go to that queue).",
)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option(
    "--preload/--no-preload",
    default=True,
    show_default=True,
    help="Import hub_pipelines.definitions before the pool starts.",
)
def worker(name, concurrency, queues, loglevel, preload) -> None:
    """Start a Celery worker that executes hub's steps (broker from HUB_CELERY_BROKER_URL)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from hub_pipelines.executors import celery_urls, make_worker_app, redact_url

    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError(
            "DAGSTER_HOME is not set: a worker writes step events to the same Dagster instance as the"
            " runs it serves (the production instance: deploy/dagster/dagster.yaml)"
        )
    if preload:
        import hub_pipelines.definitions  # noqa: F401

    broker, backend = celery_urls()
    node = name or f"hub-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    click.echo(
        f"hub worker {node}: broker {redact_url(broker)}, backend {redact_url(backend)},"
        f" queues {','.join(queues)}, concurrency {concurrency}",
        err=True,
    )
    app = make_worker_app()
    app.worker_main(
        [
            "worker",
            f"--hostname={node}",
            f"--concurrency={concurrency}",
            f"--queues={','.join(queues)}",
            f"--loglevel={loglevel}",
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
        ]
    )
