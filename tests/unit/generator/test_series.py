"""hourly_series and security_series are what an hourly rollup of the stored events gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hub_pipelines.generator import GeneratorConfig, hourly_series, security_series, simulate


def _stored_frame(clean) -> pd.DataFrame:
    frame = pd.DataFrame(clean.ingested.stored)
    frame["ts"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor("h")
    return frame


def _rollup(stored: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """The hourly rollup of stored events, written plainly with pandas."""
    keys = ["ts", *by]
    telemetry = stored[stored["event_type"] == "telemetry"]
    latency = telemetry[telemetry["metric_name"] == "latency_ms"].copy()
    latency["is_error"] = latency["status"] != "ok"
    out = latency.groupby(keys).agg(
        requests=("metric_value", "size"),
        errors=("is_error", "sum"),
        latency_avg_ms=("metric_value", "mean"),
        latency_p95_ms=("metric_value", lambda v: float(np.quantile(v, 0.95))),
    )
    for metric in ("tokens_input", "tokens_output"):
        rows = telemetry[telemetry["metric_name"] == metric]
        out[metric] = rows.groupby(keys)["metric_value"].sum()
    cost = stored[stored["event_type"] == "cost"]
    out["spend_usd"] = cost.groupby(keys)["cost_usd"].sum()
    return out


@pytest.mark.parametrize(
    "by", [("tenant_id", "model"), ("tenant_id", "project"), ("model",), ("team", "region")]
)
def test_hourly_series_is_the_rollup_of_the_stored_events(clean, by):
    series = hourly_series(clean.sim, by=by)
    expected = _rollup(_stored_frame(clean), by)
    active = series[series["requests"] > 0].set_index(["ts", *by]).sort_index()
    assert list(active.index) == list(expected.index)
    for column in ("requests", "errors", "tokens_input", "tokens_output"):
        assert (active[column].to_numpy() == expected[column].to_numpy()).all(), column
    for column in ("latency_avg_ms", "latency_p95_ms", "spend_usd"):
        np.testing.assert_allclose(active[column], expected[column], rtol=1e-9, err_msg=column)
    np.testing.assert_allclose(active["error_rate"], expected["errors"] / expected["requests"], rtol=1e-12)
    assert (active["tokens_total"] == active["tokens_input"] + active["tokens_output"]).all()


def test_hourly_series_is_a_regular_grid_with_empty_hours(clean):
    sim = clean.sim
    series = hourly_series(sim, by=("tenant_id", "model"))
    assert list(series.columns) == [
        "ts", "tenant_id", "model", "requests", "errors", "error_rate", "latency_avg_ms",
        "latency_p95_ms", "tokens_input", "tokens_output", "tokens_total", "spend_usd",
    ]  # fmt: skip
    pairs = {(t.tenant_id, sim.catalogue.models[m].name) for t in sim.catalogue.tenants for m in t.models}
    assert set(map(tuple, series[["tenant_id", "model"]].drop_duplicates().to_numpy())) == pairs
    assert len(series) == len(pairs) * sim.config.hours
    assert str(series["ts"].dtype) == "datetime64[ns, UTC]"
    for _, rows in series.groupby(["tenant_id", "model"]):
        assert (rows["ts"].diff().dropna() == pd.Timedelta(hours=1)).all()
        assert rows["ts"].iloc[0] == pd.Timestamp(sim.config.start_utc)
    empty = series[series["requests"] == 0]
    assert len(empty) > 0  # the rate is low: some hours see no request at all
    assert (empty[["errors", "tokens_input", "tokens_output", "spend_usd", "error_rate"]] == 0).all().all()
    assert empty["latency_avg_ms"].isna().all() and empty["latency_p95_ms"].isna().all()


def test_security_series_counts_the_stored_detections(clean):
    sim = clean.sim
    series = security_series(sim)
    stored = _stored_frame(clean)
    expected = stored[stored["event_type"] == "security"].groupby(["ts", "tenant_id"]).size()
    active = series[series["threats"] > 0].set_index(["ts", "tenant_id"])["threats"].sort_index()
    assert active.to_dict() == expected.to_dict()
    assert len(series) == len(sim.catalogue.tenants) * sim.config.hours
    by_type = security_series(sim, by=("tenant_id", "threat_type"))
    assert by_type["threats"].sum() == series["threats"].sum() == len(sim.security)


def test_series_reject_unknown_dimensions(clean):
    with pytest.raises(ValueError, match="cannot group by"):
        hourly_series(clean.sim, by=("customer",))


def test_p95_is_numpys_linear_quantile_at_a_realistic_rate():
    sim = simulate(GeneratorConfig(days=2, tenants=1, seed=5, requests_per_hour=300, anomalies=False))
    series = hourly_series(sim, by=("tenant_id", "model"))
    r = sim.requests
    names = [m.name for m in sim.catalogue.models]
    for row in series[series["requests"] > 0].sample(40, random_state=0).itertuples():
        hour = int((row.ts - pd.Timestamp(sim.config.start_utc)) / pd.Timedelta(hours=1))
        values = r.latency_ms[(r.hour == hour) & (r.model == names.index(row.model))]
        assert row.latency_p95_ms == np.quantile(values, 0.95)
        assert row.requests == len(values)
