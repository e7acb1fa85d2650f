"""Incidents in the warehouse: the correlation engine (hub_ml.correlation) run on stored events,
its incidents written per day partition, read back for `hub incidents`, and an Incidents section for
the operations and compliance reports (hub_pipelines.incidents.report). Plain Python: no Dagster
import here; the `correlations` asset (hub_pipelines.defs.correlation) calls `correlate_day`."""

from hub_pipelines.incidents.inputs import load_input, tenants_in
from hub_pipelines.incidents.run import DayResult, correlate_day, correlate_days, days_of
from hub_pipelines.incidents.store import read_incidents, read_members, write_incidents

__all__ = [
    "DayResult",
    "correlate_day",
    "correlate_days",
    "days_of",
    "load_input",
    "read_incidents",
    "read_members",
    "tenants_in",
    "write_incidents",
]
