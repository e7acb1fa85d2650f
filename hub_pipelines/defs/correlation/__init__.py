"""Correlation: cross-module incidents and their root causes (issue 7)."""

import dagster as dg

# Registers the Incidents section of the operations and compliance reports.
import hub_pipelines.incidents.report  # noqa: F401
from hub_pipelines.defs.correlation.assets import correlations, correlations_job, correlations_schedule

defs = dg.Definitions(
    assets=[correlations],
    jobs=[correlations_job],
    schedules=[correlations_schedule],
)
