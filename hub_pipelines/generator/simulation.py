"""The simulation: LLM requests and everything around them, as numpy arrays.

Requests are drawn per (hour, tenant, model) cell: Poisson counts around a rate with daily and
weekly seasonality (in the tenant's timezone) and a slow trend, then per request a project, region
and environment, lognormal tokens, a status, a latency that grows with output tokens and load, and
retries of failed attempts that share the call's correlation id. Values are rounded here exactly as
they are written (latency to 0.1 ms, cost to 1e-8 of its currency) and stored as ingest normalises
them (seconds x 1000.0, amount x FX rate), so rollups of the written events and `hourly_series`
agree.

Arrays are kept in (hour, tenant, model) order, which makes per-day slices and the common hourly
aggregation contiguous; the writer sorts each day by time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hub_pipelines.events.contract import FX_TO_USD
from hub_pipelines.generator.anomalies import AnomalyEffects, plan_anomalies
from hub_pipelines.generator.catalogue import (
    CURRENCIES,
    ENVIRONMENT_SHARES,
    FRAMEWORKS,
    GOVERNANCE_ACTIONS,
    PEOPLE,
    POLICIES,
    SECURITY_SEVERITY_SHARES,
    THREATS,
    Catalogue,
    build_catalogue,
)
from hub_pipelines.generator.config import DAY_MS, HOUR_MS, GeneratorConfig

STATUS_OK, STATUS_ERROR, STATUS_TIMEOUT = 0, 1, 2
RETRY_PROBABILITY = 0.7
MAX_RETRIES = 2
MAX_INPUT_TOKENS = 200_000
# Mon..Sun volume relative to a Monday; weekends are quiet.
_WEEKDAY_FACTORS = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.45, 0.4])
_WEEKDAY_FACTORS = _WEEKDAY_FACTORS / _WEEKDAY_FACTORS.mean()


def _daily_shape(local_hour: np.ndarray) -> np.ndarray:
    """Business-hours peak early afternoon, an evening shoulder, a quiet night."""
    return (
        0.12
        + np.exp(-0.5 * ((local_hour - 13.5) / 3.2) ** 2)
        + 0.25 * np.exp(-0.5 * ((local_hour - 20.5) / 1.8) ** 2)
    )


_DAILY_MEAN = float(_daily_shape(np.arange(24) + 0.5).mean())


@dataclass
class Requests:
    """One row per request attempt (retries are rows too)."""

    ts_ms: np.ndarray  # int64, UTC epoch milliseconds
    hour: np.ndarray  # int32, hours since the window's start
    tenant: np.ndarray  # int16, index into catalogue.tenants
    model: np.ndarray  # int16, index into catalogue.models
    project: np.ndarray  # int16, index into catalogue.projects
    region: np.ndarray  # int8, index into catalogue.REGIONS
    environment: np.ndarray  # int8, index into catalogue.ENVIRONMENTS
    status: np.ndarray  # int8, index into catalogue.STATUSES
    retry: np.ndarray  # int8, 0 for a first attempt
    call: np.ndarray  # int64, the logical call (its correlation id); retries share it
    tokens_input: np.ndarray  # int32
    tokens_output: np.ndarray  # int32
    latency_ms: np.ndarray  # float64, as ingest normalises it
    latency_in_seconds: np.ndarray  # bool, sent with unit "s"
    currency: np.ndarray  # int8, index into catalogue.CURRENCIES
    amount: np.ndarray  # float64, cost as sent, in `currency`
    cost_usd: np.ndarray  # float64, amount x FX rate, as ingest normalises it

    def __len__(self) -> int:
        return len(self.ts_ms)

    def take(self, index: np.ndarray) -> Requests:
        return Requests(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


@dataclass
class SecurityDetections:
    """One row per detection of llm-sentinel (all at warning or above)."""

    ts_ms: np.ndarray
    hour: np.ndarray
    tenant: np.ndarray
    threat: np.ndarray  # index into catalogue.THREATS
    severity: np.ndarray  # index into catalogue.SECURITY_SEVERITIES
    model: np.ndarray
    project: np.ndarray
    user: np.ndarray  # user number within the tenant
    ip: np.ndarray  # uint32, IPv4 address
    action: np.ndarray  # 0 blocked, 1 flagged, 2 allowed
    confidence: np.ndarray
    # The request call a detection was raised on (its correlation id), -1 for none; only scenarios
    # link detections to requests, and without them it is None.
    call: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass
class PolicyEvaluations:
    """One row per llm-policy-engine evaluation of a request."""

    ts_ms: np.ndarray
    request: np.ndarray  # index into Simulation.requests
    rule: np.ndarray  # index into catalogue.POLICIES
    failed: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass
class Simulation:
    """A simulated window of an LLM estate: the requests and the security, policy, governance and
    registry events around them, and the labels of the anomalies injected into them. Series come
    from `hourly_series` / `security_series`; files from `write_batches`."""

    config: GeneratorConfig
    catalogue: Catalogue
    requests: Requests
    security: SecurityDetections
    policy: PolicyEvaluations
    governance: list[dict]  # {ts_ms, tenant, action, status, actor, resource, framework, ticket}
    registry: list[dict]  # {ts_ms, tenant, asset_id, asset_name, asset_type, version, owner, ...}
    labels: list[dict]
    effects: AnomalyEffects = field(repr=False)
    # Ground truth of the injected multi-module scenarios (config.scenarios), else empty.
    scenarios: list[dict] = field(default_factory=list)

    @property
    def hours(self) -> int:
        return self.config.hours


def simulate(config: GeneratorConfig) -> Simulation:
    """Simulate the estate for the config's window (docs/GENERATOR_SPEC.md). No files are written."""
    catalogue = build_catalogue(config)
    effects, labels = plan_anomalies(config, catalogue)
    seasonal = _seasonal_factors(config, catalogue)
    if config.scenarios:
        from hub_pipelines.generator.scenarios import simulate_with_scenarios

        return simulate_with_scenarios(config, catalogue, effects, labels, seasonal)
    requests = _simulate_requests(config, catalogue, effects, seasonal)
    return Simulation(
        config=config,
        catalogue=catalogue,
        requests=requests,
        security=_simulate_security(config, catalogue, effects, seasonal),
        policy=_simulate_policy(config, requests),
        governance=_simulate_governance(config, catalogue),
        registry=_simulate_registry(config, catalogue),
        labels=labels,
        effects=effects,
    )


def _seasonal_factors(config: GeneratorConfig, catalogue: Catalogue) -> np.ndarray:
    """(H, T) daily x weekly x trend factor of each tenant, averaging about 1 at the start."""
    hours = np.arange(config.hours)
    utc_ms = config.start_ms + hours.astype(np.int64) * HOUR_MS
    out = np.empty((config.hours, len(catalogue.tenants)))
    for t, tenant in enumerate(catalogue.tenants):
        local_ms = utc_ms + tenant.utc_offset_minutes * 60_000
        local_hour = (local_ms % DAY_MS) / HOUR_MS + 0.5
        # 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
        weekday = (local_ms // DAY_MS + 3) % 7
        trend = 1.0 + tenant.growth_per_year * hours / (24 * 365)
        out[:, t] = _daily_shape(local_hour) / _DAILY_MEAN * _WEEKDAY_FACTORS[weekday] * trend
    return out


class _RequestModel:
    """Everything that turns a request's identity (hour, tenant, model, project) into its outcome,
    precomputed as flat lookup tables."""

    def __init__(
        self, config: GeneratorConfig, catalogue: Catalogue, effects: AnomalyEffects, seasonal
    ) -> None:
        self.config = config
        self.n_tenants, self.n_models = len(catalogue.tenants), len(catalogue.models)
        models = catalogue.models
        for attr in (
            "error_rate", "timeout_rate", "input_sigma", "output_sigma", "base_latency_ms",
            "ms_per_output_token", "timeout_ms", "usd_per_1k_input", "usd_per_1k_output",
        ):  # fmt: skip
            setattr(self, attr, np.array([getattr(m, attr) for m in models]))
        self.log_input_median = np.log([m.input_median for m in models])
        self.log_output_median = np.log([m.output_median for m in models])
        self.context = np.array([p.context_factor for p in catalogue.projects])
        self.currency = np.array([CURRENCIES.index(p.currency) for p in catalogue.projects], dtype=np.int8)
        self.fx = np.array([FX_TO_USD[c] for c in CURRENCIES])
        self.legacy = np.array([t.legacy_observatory for t in catalogue.tenants])
        # Latency rises with the expected load of the hour (capacity is planned for the usual
        # daily peak, so anomalies in volume do not slow requests down).
        self.load = (1.0 + 0.3 * seasonal / seasonal.max(axis=0, keepdims=True)).ravel()
        self.token_scale = effects.tokens.ravel()
        self.latency_scale = effects.latency.ravel()
        self.runaway_project = effects.runaway_project.ravel()
        self.runaway_input = effects.runaway_input.ravel()
        # Projects by the tenant's shares: cumulative shares padded to the widest tenant.
        width = catalogue.max_projects
        self.project_cumulative = np.ones((self.n_tenants, width))
        self.first_project = np.zeros(self.n_tenants, dtype=np.int64)
        for t, spec in enumerate(catalogue.tenants):
            shares = np.array([catalogue.projects[p].share for p in spec.projects])
            self.project_cumulative[t, : len(shares)] = np.cumsum(shares) / shares.sum()
            self.first_project[t] = spec.projects[0]
        self.regions = np.array([spec.regions for spec in catalogue.tenants], dtype=np.int8)
        self.environment_cumulative = np.cumsum(ENVIRONMENT_SHARES)[:-1]

    def first_attempts(self, rng, cells: np.ndarray, first_call: int) -> Requests:
        """New calls, one per entry of `cells` (flat (hour, tenant, model) indices)."""
        n = len(cells)
        per_hour = self.n_tenants * self.n_models
        hour = (cells // per_hour).astype(np.int32)
        tenant = ((cells // self.n_models) % self.n_tenants).astype(np.int16)
        model = (cells % self.n_models).astype(np.int16)
        ts_ms = self.config.start_ms + hour.astype(np.int64) * HOUR_MS + rng.integers(0, HOUR_MS, n)
        pick = rng.random(n)
        local_project = np.zeros(n, dtype=np.int16)
        for j in range(self.project_cumulative.shape[1] - 1):
            local_project += pick >= self.project_cumulative[tenant, j]
        project = (self.first_project[tenant] + local_project).astype(np.int16)
        region = self.regions[tenant, (rng.random(n) < 0.2).astype(np.int8)]
        environment = np.searchsorted(self.environment_cumulative, rng.random(n), side="right").astype(
            np.int8
        )
        identity = {
            "ts_ms": ts_ms, "hour": hour, "tenant": tenant, "model": model, "project": project,
            "region": region, "environment": environment,
            "call": np.arange(first_call, first_call + n, dtype=np.int64), "retry": np.zeros(n, dtype=np.int8),
        }  # fmt: skip
        return self.outcomes(rng, identity)

    def retries(self, rng, previous: Requests, attempt: int) -> Requests:
        """Retries of the failed attempts in `previous` (most clients retry; some give up)."""
        retry = (previous.status != STATUS_OK) & (rng.random(len(previous)) < RETRY_PROBABILITY)
        rows = np.flatnonzero(retry)
        backoff = np.rint(rng.uniform(0.5, 1.5, len(rows)) * 1000 * 2**attempt).astype(np.int64)
        sent = previous.ts_ms[rows] + np.ceil(previous.latency_ms[rows]).astype(np.int64) + backoff
        keep = sent < self.config.end_ms  # retries after the window are not part of it
        rows, sent = rows[keep], sent[keep]
        identity = {
            name: getattr(previous, name)[rows]
            for name in ("tenant", "model", "project", "region", "environment", "call")
        }
        identity |= {
            "ts_ms": sent,
            "hour": ((sent - self.config.start_ms) // HOUR_MS).astype(np.int32),
            "retry": np.full(len(rows), attempt, dtype=np.int8),
        }
        return self.outcomes(rng, identity)

    def outcomes(self, rng, identity: dict[str, np.ndarray]) -> Requests:
        """Status, tokens, latency and cost of attempts."""
        hour, tenant, model, project = (
            identity["hour"],
            identity["tenant"],
            identity["model"],
            identity["project"],
        )
        n = len(hour)
        cell = (hour.astype(np.int64) * self.n_tenants + tenant) * self.n_models + model
        error_rate, timeout_rate = self.error_rate[model], self.timeout_rate[model]
        u = rng.random(n)
        status = np.where(
            u < error_rate, STATUS_ERROR, np.where(u < error_rate + timeout_rate, STATUS_TIMEOUT, STATUS_OK)
        )

        token_scale = self.token_scale[cell]
        runaway = np.where(self.runaway_project[cell] == project, self.runaway_input[cell], 1.0)
        raw_in = np.exp(self.log_input_median[model] + self.input_sigma[model] * rng.standard_normal(n))
        tokens_input = np.clip(
            np.rint(raw_in * self.context[project] * token_scale * runaway), 1, MAX_INPUT_TOKENS
        )
        raw_out = np.exp(self.log_output_median[model] + self.output_sigma[model] * rng.standard_normal(n))
        tokens_output = np.maximum(np.rint(raw_out * token_scale), 1)

        noise = rng.lognormal(0.0, 0.25, n)
        timeout_ms = self.timeout_ms[model]
        base_latency = self.base_latency_ms[model]
        scale = noise * self.latency_scale[cell]
        load = self.load[hour.astype(np.int64) * self.n_tenants + tenant]
        latency = (base_latency + self.ms_per_output_token[model] * tokens_output) * load * scale
        # A request slower than the client's timeout is a timeout, whatever it would have returned.
        status = np.where((status == STATUS_OK) & (latency >= timeout_ms), STATUS_TIMEOUT, status).astype(
            np.int8
        )
        latency = np.where(status == STATUS_ERROR, base_latency * 0.4 * scale, latency)  # fails fast
        latency = np.where(status == STATUS_TIMEOUT, timeout_ms + 100.0 * noise, latency)
        tokens_output = np.where(status == STATUS_OK, tokens_output, 0.0)

        tenths = np.rint(latency * 10.0)
        in_seconds = (rng.random(n) < self.config.latency_seconds_fraction) & ~self.legacy[tenant]
        # The value ingest stores: seconds are multiplied back by 1000.0, which is not always exact.
        latency_ms = np.where(in_seconds, (tenths / 10_000.0) * 1000.0, tenths / 10.0)

        usd = (
            tokens_input * self.usd_per_1k_input[model] + tokens_output * self.usd_per_1k_output[model]
        ) / 1000.0
        currency = self.currency[project]
        fx = self.fx[currency]
        amount = np.maximum(np.round(usd / fx, 8), 1e-8)
        return Requests(
            **identity,
            status=status,
            tokens_input=tokens_input.astype(np.int32),
            tokens_output=tokens_output.astype(np.int32),
            latency_ms=latency_ms,
            latency_in_seconds=in_seconds,
            currency=currency,
            amount=amount,
            cost_usd=amount * fx,
        )


def _concat(parts: list[Requests]) -> Requests:
    return Requests(
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in Requests.__dataclass_fields__}
    )


def _simulate_requests(
    config: GeneratorConfig, catalogue: Catalogue, effects: AnomalyEffects, seasonal: np.ndarray
) -> Requests:
    """Requests a day at a time: arrays of a few hundred thousand rows stay in cache, and the
    temporaries of one day are all the extra memory a simulation of months needs."""
    rng = config.rng("requests")
    n_tenants, n_models = len(catalogue.tenants), len(catalogue.models)
    base = np.zeros((n_tenants, n_models))
    for t, tenant in enumerate(catalogue.tenants):
        for m, share in zip(tenant.models, tenant.model_shares, strict=True):
            base[t, m] = config.requests_per_hour * tenant.size * share
    counts = rng.poisson(base[None, :, :] * seasonal[:, :, None] * effects.volume).reshape(config.hours, -1)
    per_hour = n_tenants * n_models
    model = _RequestModel(config, catalogue, effects, seasonal)
    # Retries add a few percent to the first attempts; the output grows if that is not enough.
    out = _Columns(int(counts.sum() * 1.05) + 1024)
    carried: list[Requests] = []  # retries that fall into the next day
    calls = 0
    for day in range(config.days):
        first_hour, end_hour = day * 24, (day + 1) * 24
        day_counts = counts[first_hour:end_hour].ravel()
        cells = np.repeat(np.arange(first_hour * per_hour, end_hour * per_hour, dtype=np.int64), day_counts)
        parts = [model.first_attempts(rng, cells, calls)]
        calls += len(cells)
        for attempt in range(1, MAX_RETRIES + 1):
            parts.append(model.retries(rng, parts[-1], attempt))
        merged = _concat(carried + parts)
        late = merged.hour >= end_hour
        carried = [merged.take(np.flatnonzero(late))] if late.any() else []
        if late.any():
            merged = merged.take(np.flatnonzero(~late))
        key = (merged.hour.astype(np.int64) * n_tenants + merged.tenant) * n_models + merged.model
        out.append(merged.take(np.argsort(key, kind="stable")))
    return out.finish()


class _Columns:
    """Requests appended a day at a time into arrays allocated once: a second full copy of
    months of requests (and the memory for it) is what a final concatenate would cost."""

    def __init__(self, capacity: int) -> None:
        self.size = 0
        self.arrays: dict[str, np.ndarray] | None = None
        self.capacity = capacity

    def append(self, chunk: Requests) -> None:
        n = len(chunk)
        if self.arrays is None:
            self.arrays = {
                name: np.empty(self.capacity, dtype=getattr(chunk, name).dtype)
                for name in Requests.__dataclass_fields__
            }
        if self.size + n > self.capacity:
            self.capacity = max(int(self.capacity * 1.25), self.size + n)
            for name, array in self.arrays.items():
                grown = np.empty(self.capacity, dtype=array.dtype)
                grown[: self.size] = array[: self.size]
                self.arrays[name] = grown
        for name, array in self.arrays.items():
            array[self.size : self.size + n] = getattr(chunk, name)
        self.size += n

    def finish(self) -> Requests:
        if self.arrays is None:
            return _empty_requests()
        return Requests(**{name: array[: self.size] for name, array in self.arrays.items()})


def _empty_requests() -> Requests:
    dtypes = {
        "ts_ms": np.int64, "hour": np.int32, "tenant": np.int16, "model": np.int16, "project": np.int16,
        "region": np.int8, "environment": np.int8, "status": np.int8, "retry": np.int8, "call": np.int64,
        "tokens_input": np.int32, "tokens_output": np.int32, "latency_ms": np.float64,
        "latency_in_seconds": np.bool_, "currency": np.int8, "amount": np.float64, "cost_usd": np.float64,
    }  # fmt: skip
    return Requests(**{name: np.zeros(0, dtype=dtype) for name, dtype in dtypes.items()})


def _simulate_security(
    config: GeneratorConfig, catalogue: Catalogue, effects: AnomalyEffects, seasonal: np.ndarray
) -> SecurityDetections:
    rng = config.rng("security")
    sizes = np.array([t.size for t in catalogue.tenants])
    # Attacks follow traffic loosely; automated ones come at night too.
    normal = config.security_per_hour * sizes[None, :] * (0.5 + 0.5 * seasonal)
    # A burst is an attacker on top of the usual detections, at (magnitude - 1) x the tenant's
    # mean rate whatever the hour, so that a burst at night is as visible as one at noon.
    attack = normal.mean(axis=0, keepdims=True) * (effects.threats - 1.0)
    counts = rng.poisson(normal + attack)
    cell = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    n = len(cell)
    n_tenants = len(catalogue.tenants)
    hour = (cell // n_tenants).astype(np.int32)
    tenant = (cell % n_tenants).astype(np.int16)
    ts_ms = config.start_ms + hour.astype(np.int64) * HOUR_MS + rng.integers(0, HOUR_MS, n)
    weights = np.array([w for _, w, _ in THREATS])
    threat = rng.choice(len(THREATS), size=n, p=weights / weights.sum()).astype(np.int8)
    severity = rng.choice(3, size=n, p=SECURITY_SEVERITY_SHARES).astype(np.int8)
    model = np.empty(n, dtype=np.int16)
    project = np.empty(n, dtype=np.int16)
    pick_model, pick_project = rng.random(n), rng.random(n)
    for t, spec in enumerate(catalogue.tenants):
        rows = tenant == t
        shares = np.cumsum(spec.model_shares) / sum(spec.model_shares)
        model[rows] = np.array(spec.models)[
            np.minimum(np.searchsorted(shares, pick_model[rows]), len(shares) - 1)
        ]
        pshares = np.cumsum([catalogue.projects[p].share for p in spec.projects])
        pshares = pshares / pshares[-1]
        local = np.minimum(np.searchsorted(pshares, pick_project[rows]), len(pshares) - 1)
        project[rows] = np.array(spec.projects)[local]
    user = rng.integers(1, 500, n).astype(np.int32)
    # Ordinary detections come from many addresses in the documentation ranges.
    ip = (
        np.where(rng.random(n) < 0.5, 198 << 24 | 51 << 16 | 100 << 8, 192 << 24 | 2 << 8)
        + rng.integers(1, 255, n)
    ).astype(np.uint32)
    burst = effects.burst[hour, tenant]
    total = normal + attack
    attack_share = np.divide(attack, total, out=np.zeros_like(total), where=total > 0)[hour, tenant]
    attacker = (burst >= 0) & (rng.random(n) < attack_share)
    for b, (threat_type, address) in enumerate(effects.bursts):
        rows = attacker & (burst == b)
        threat[rows] = [name for name, _, _ in THREATS].index(threat_type)
        a, bb, c, d = (int(x) for x in address.split("."))
        ip[rows] = a << 24 | bb << 16 | c << 8 | d
    action_pick = rng.random(n)
    action = np.where(
        severity == 2,
        0,
        np.where(severity == 1, np.where(action_pick < 0.7, 0, 1), np.where(action_pick < 0.7, 1, 2)),
    )
    confidence = np.round(rng.uniform(0.55, 0.995, n), 3)
    return SecurityDetections(
        ts_ms=ts_ms,
        hour=hour,
        tenant=tenant,
        threat=threat,
        severity=severity,
        model=model,
        project=project,
        user=user,
        ip=ip,
        action=action.astype(np.int8),
        confidence=confidence,
    )


def _simulate_policy(config: GeneratorConfig, requests: Requests) -> PolicyEvaluations:
    rng = config.rng("policy")
    n = len(requests)
    chosen = np.flatnonzero(rng.random(n) < config.policy_fraction)
    weights = np.array([p[3] for p in POLICIES])
    rule = rng.choice(len(POLICIES), size=len(chosen), p=weights / weights.sum()).astype(np.int8)
    fail_rate = np.array([p[4] for p in POLICIES])[rule]
    failed = rng.random(len(chosen)) < fail_rate
    # Policies are evaluated just before the request goes to the provider.
    ts_ms = np.maximum(requests.ts_ms[chosen] - rng.integers(2, 40, len(chosen)), config.start_ms)
    return PolicyEvaluations(ts_ms=ts_ms, request=chosen, rule=rule, failed=failed)


def _simulate_governance(config: GeneratorConfig, catalogue: Catalogue) -> list[dict]:
    rng = config.rng("governance")
    weights = np.array([a[1] for a in GOVERNANCE_ACTIONS])
    events: list[dict] = []
    for day in range(config.days):
        for t, tenant in enumerate(catalogue.tenants):
            count = int(rng.poisson(config.governance_per_day))
            for _ in range(count):
                # Working hours, 09:00-18:00 in the tenant's timezone.
                local_minute = int(rng.integers(9 * 60, 18 * 60))
                ts_ms = (
                    config.start_ms
                    + day * DAY_MS
                    + local_minute * 60_000
                    - tenant.utc_offset_minutes * 60_000
                    + int(rng.integers(0, 60_000))
                )
                ts_ms = min(max(ts_ms, config.start_ms), config.end_ms - 1)
                action, _, statuses = GOVERNANCE_ACTIONS[
                    int(rng.choice(len(GOVERNANCE_ACTIONS), p=weights / weights.sum()))
                ]
                project = catalogue.projects[tenant.projects[int(rng.integers(0, len(tenant.projects)))]]
                model = catalogue.models[tenant.models[int(rng.integers(0, len(tenant.models)))]]
                resource = (
                    f"model:{model.name}"
                    if action in ("approval", "model_card_update", "risk_assessment")
                    else f"project:{project.name}"
                )
                events.append(
                    {
                        "ts_ms": ts_ms,
                        "tenant": t,
                        "action": action,
                        "status": statuses[int(rng.integers(0, len(statuses)))],
                        "actor": f"{PEOPLE[int(rng.integers(0, len(PEOPLE)))]}@{tenant.tenant_id}.example",
                        "resource": resource,
                        "framework": FRAMEWORKS[int(rng.integers(0, len(FRAMEWORKS)))],
                        "ticket": f"GOV-{int(rng.integers(1000, 10000))}",
                        "team": project.team,
                    }
                )
    events.sort(key=lambda e: (e["ts_ms"], e["tenant"]))
    return events


# Mean days between new versions of an asset, by asset type.
_VERSION_INTERVAL_DAYS = {"model": 40.0, "prompt": 9.0, "agent": 14.0, "dataset": 20.0}


def _simulate_registry(config: GeneratorConfig, catalogue: Catalogue) -> list[dict]:
    """Every asset is registered at the start of the window; new versions follow at random."""
    rng = config.rng("registry")
    assets: list[dict] = []
    for t, tenant in enumerate(catalogue.tenants):
        model_ids = {}
        for m in tenant.models:
            spec = catalogue.models[m]
            asset_id = f"{tenant.tenant_id}:model:{spec.name}"
            model_ids[m] = asset_id
            assets.append(
                {
                    "tenant": t,
                    "asset_id": asset_id,
                    "asset_name": spec.name,
                    "asset_type": "model",
                    "version": spec.snapshot,
                    "owner": "platform",
                    "provider": spec.provider,
                    "model": spec.name,
                    "depends_on": [],
                }
            )
        for p in tenant.projects:
            project = catalogue.projects[p]
            model = model_ids[tenant.models[int(rng.integers(0, len(tenant.models)))]]
            prompt_id = f"{tenant.tenant_id}:prompt:{project.name}"
            assets.append(
                {
                    "tenant": t,
                    "asset_id": prompt_id,
                    "asset_name": f"{project.name} system prompt",
                    "asset_type": "prompt",
                    "version": "1.0.0",
                    "owner": project.team,
                    "depends_on": [model],
                }
            )
            dependencies = [prompt_id, model]
            if project.context_factor >= 2.0:  # retrieval-heavy projects have a corpus
                corpus = f"{tenant.tenant_id}:dataset:{project.name}-corpus"
                assets.append(
                    {
                        "tenant": t,
                        "asset_id": corpus,
                        "asset_name": f"{project.name} corpus",
                        "asset_type": "dataset",
                        "version": "1.0.0",
                        "owner": project.team,
                        "depends_on": [],
                    }
                )
                dependencies.append(corpus)
            if rng.random() < 0.6:
                assets.append(
                    {
                        "tenant": t,
                        "asset_id": f"{tenant.tenant_id}:agent:{project.name}-agent",
                        "asset_name": f"{project.name} agent",
                        "asset_type": "agent",
                        "version": "1.0.0",
                        "owner": project.team,
                        "depends_on": dependencies,
                    }
                )
    events: list[dict] = []
    for k, asset in enumerate(assets):
        # Registered a few seconds apart in the first minutes of the window.
        events.append({**asset, "ts_ms": config.start_ms + 1000 * (k + 1), "lifecycle_stage": "production"})
        interval_ms = _VERSION_INTERVAL_DAYS[asset["asset_type"]] * DAY_MS
        ts = config.start_ms + float(rng.exponential(interval_ms))
        version = asset["version"]
        while ts < config.end_ms:
            version = _next_version(asset["asset_type"], version, rng)
            events.append({**asset, "ts_ms": int(ts), "version": version, "lifecycle_stage": "production"})
            ts += float(rng.exponential(interval_ms))
    events.sort(key=lambda e: (e["ts_ms"], e["asset_id"]))
    return events


def _next_version(asset_type: str, version: str, rng: np.random.Generator) -> str:
    if asset_type == "model":
        # Providers publish dated snapshots; hub records the one the tenant moved to.
        return f"{version.split('+')[0]}+r{int(rng.integers(2, 99))}"
    major, minor, patch = (int(x) for x in version.split("."))
    if rng.random() < 0.7:
        return f"{major}.{minor}.{patch + 1}"
    return f"{major}.{minor + 1}.0"
