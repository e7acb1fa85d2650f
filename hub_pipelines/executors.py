"""How a run executes its steps, chosen when the run starts (never at import): one executor definition
for every hub job, so moving from one machine to Celery workers is configuration, not code.

`hub_executor` accepts the same run config as Dagster's default executor (`multiprocess:` or
`in_process:` under `execution: config:`) plus `celery:`. With no executor config a run follows the
environment it starts in:

| variable | default | meaning |
|---|---|---|
| `HUB_EXECUTOR` | `multiprocess` | `multiprocess`, `in_process` or `celery` |
| `HUB_CELERY_BROKER_URL` | `redis://127.0.0.1:6379/0` | Celery broker: `redis://...` or `amqp://...` (RabbitMQ) |
| `HUB_CELERY_BACKEND_URL` | the broker URL for Redis, else `rpc://` | Celery result backend |

Steps sent to Celery run in `hub worker` processes (hub_pipelines/cli_worker.py) started with the same
broker and backend; every worker loads the code location itself and writes to the instance and the
warehouse named in its own environment. hub's assets pass no data between steps through IO managers
(they write to the warehouse), so workers on other machines need no shared disk.
"""

import os
import re

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
)
from dagster._core.execution.retries import RetryMode, get_retries_config

KINDS = ("multiprocess", "in_process", "celery")
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"

CELERY_CONFIG = dg.Field(
    {
        "broker": dg.Field(
            dg.Noneable(dg.StringSource),
            is_required=False,
            description="Celery broker URL; unset: HUB_CELERY_BROKER_URL, else redis://127.0.0.1:6379/0.",
        ),
        "backend": dg.Field(
            dg.Noneable(dg.StringSource),
            is_required=False,
            description="Celery result backend; unset: HUB_CELERY_BACKEND_URL, else the Redis broker, else rpc://.",
        ),
        "include": dg.Field([str], is_required=False, description="Modules every worker should import."),
        "config_source": dg.Field(
            dg.Noneable(dg.Permissive()), is_required=False, description="More Celery settings."
        ),
        "retries": get_retries_config(),
    },
    description="Send each step to a Celery worker (`hub worker`).",
)


def celery_urls(broker: str | None = None, backend: str | None = None) -> tuple[str, str]:
    """(broker, backend): arguments first, then HUB_CELERY_BROKER_URL / HUB_CELERY_BACKEND_URL."""
    broker = broker or os.environ.get("HUB_CELERY_BROKER_URL") or DEFAULT_BROKER_URL
    backend = backend or os.environ.get("HUB_CELERY_BACKEND_URL")
    if not backend:
        backend = broker if broker.startswith(("redis://", "rediss://")) else "rpc://"
    return broker, backend


def redact_url(url: str) -> str:
    """A broker URL without its password (Redis URLs often have an empty user: redis://:pw@host)."""
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def celery_app_args(broker: str | None = None, backend: str | None = None, **extra) -> dict:
    """The arguments dagster_celery.make_app takes, for the executor and for `hub worker` alike."""
    from dagster_celery.executor import CeleryExecutor

    broker, backend = celery_urls(broker, backend)
    return CeleryExecutor.for_cli(broker=broker, backend=backend, **extra).app_args()


def make_worker_app(broker: str | None = None, backend: str | None = None):
    """The Celery app a `hub worker` serves: dagster-celery's step task on hub's broker."""
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    app = make_app(celery_app_args(broker, backend))
    create_task(app)
    return app


def selected_kind(executor_config: dict) -> str:
    """The executor a run uses: its run config when it names one, else HUB_EXECUTOR."""
    named = [k for k in KINDS if k in (executor_config or {})]
    if named:
        return named[0]
    kind = (os.environ.get("HUB_EXECUTOR") or "multiprocess").strip().lower().replace("-", "_")
    if kind not in KINDS:
        raise dg.DagsterInvariantViolationError(f"HUB_EXECUTOR={kind!r}: use one of {', '.join(KINDS)}")
    return kind


def _requirements(executor_config):
    if selected_kind(executor_config) == "in_process":
        return []
    return dg.multiple_process_executor_requirements()


@dg.executor(
    name="hub_executor",
    config_schema=dg.Field(
        dg.Selector(
            {"multiprocess": MULTI_PROC_CONFIG, "in_process": IN_PROC_CONFIG, "celery": CELERY_CONFIG}
        ),
        is_required=False,
        description="Leave unset to follow HUB_EXECUTOR (default multiprocess).",
    ),
    requirements=_requirements,
)
def hub_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Multiprocess by default; in-process or Celery by run config or HUB_EXECUTOR."""
    config = init_context.executor_config or {}
    kind = selected_kind(config)
    chosen = config.get(kind)
    if kind == "in_process":
        return _core_in_process_executor_creation(_with_defaults(chosen, IN_PROC_CONFIG))
    if kind == "multiprocess":
        return _core_multiprocess_executor_creation(_with_defaults(chosen, MULTI_PROC_CONFIG))

    from dagster_celery.executor import CeleryExecutor

    chosen = chosen or {}
    broker, backend = celery_urls(chosen.get("broker"), chosen.get("backend"))
    return CeleryExecutor(
        broker=broker,
        backend=backend,
        include=chosen.get("include"),
        config_source=chosen.get("config_source"),
        retries=RetryMode.from_config(chosen.get("retries") or {"enabled": {}}),
    )


def _with_defaults(value: dict | None, field: dg.Field) -> dict:
    """Config of a sub-executor selected by environment (no run config): its schema's defaults."""
    if value is not None:
        return value
    from dagster._config import process_config

    result = process_config(field.config_type, {})
    if not result.success:  # pragma: no cover - the schemas above have defaults for every field
        raise dg.DagsterInvalidConfigError("executor defaults", result.errors, {})
    return result.value
