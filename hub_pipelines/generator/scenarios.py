"""Injected multi-module scenarios: incidents whose cause and consequences span source modules,
with their ground truth (docs/GENERATOR_SPEC.md, "Scenarios"; `GeneratorConfig(scenarios=True)`).

- ``traffic_surge``: a project's batch job multiplies the calls to one model for 2-4 working hours.
  The model's capacity is exceeded, so its latency degrades for every caller (and slow calls time
  out), and its spend spikes with the calls.
- ``prompt_injection_campaign``: one IP, through a few user accounts and one project's API key,
  sends prompt injections to several models for 1-3 hours. llm-sentinel raises its detections on
  the requests they came in (sharing their correlation ids) and the policy engine denies many.
- ``rate_limit_cascade``: a project's client bursts past the tenant rate limit. The rejected calls
  are retried at once, several times (a retry storm), and the spend of the burst breaches the
  project's budget, which the budget guard then denies until the storm is over.

Each tenant gets one scenario every 30-54 hours after a 3-day warm-up (the correlation engine's
baselines need some history), kinds in a shuffled cycle, away from the tenant's labelled anomalies.
The ground truth (`Simulation.scenarios`, DIR/scenarios.json) names each scenario's root cause,
window, effects, the series they move and the ids of every injected event and call.

Only a simulation with ``scenarios=True`` comes here; without it nothing in this module runs, and
the simulation and its files are exactly those of a generator without scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hub_pipelines.generator.anomalies import AnomalyEffects, _into_working_day
from hub_pipelines.generator.catalogue import POLICIES, THREATS, Catalogue
from hub_pipelines.generator.config import HOUR_MS, GeneratorConfig, format_utc
from hub_pipelines.generator.ids import hex_ids, uuids
from hub_pipelines.generator.render import NS_CALL, NS_REQUEST_EVENT
from hub_pipelines.generator.simulation import (
    MAX_RETRIES,
    STATUS_ERROR,
    STATUS_OK,
    PolicyEvaluations,
    Requests,
    SecurityDetections,
    Simulation,
    _concat,
    _RequestModel,
    _simulate_governance,
    _simulate_policy,
    _simulate_registry,
    _simulate_requests,
    _simulate_security,
)

SCENARIO_KINDS = ("traffic_surge", "prompt_injection_campaign", "rate_limit_cascade")
ROOT_CAUSES = {
    "traffic_surge": "traffic_surge",
    "prompt_injection_campaign": "attack_from_ip",
    "rate_limit_cascade": "rate_limit_violation",
}
WARM_UP_HOURS = 72
SPACING_HOURS = (30, 54)  # from the end of one scenario of a tenant to the start of the next
LABEL_MARGIN_HOURS = 6  # scenarios keep this far from the tenant's labelled anomalies
BUDGET_TAIL_HOURS = 2  # the budget guard keeps denying after the storm

SURGE_HOURS, SURGE_VOLUME, SURGE_LATENCY = (2, 4), (4.0, 8.0), (1.8, 3.0)
CAMPAIGN_HOURS, CAMPAIGN_RATE = (1, 3), (12.0, 30.0)  # detections an hour
STORM_HOURS, STORM_BURST, STORM_REJECT, STORM_RETRIES = (2, 4), (3.0, 6.0), (0.6, 0.85), (4, 6)

_RULE = {rule_id: index for index, (rule_id, *_rest) in enumerate(POLICIES)}
RATE_LIMIT_RULE = _RULE["pol-tenant-rate-limit"]
BUDGET_RULE = _RULE["pol-budget-guard"]
CONTENT_RULE = _RULE["pol-toxicity-filter"]
_THREAT = {name: index for index, (name, _, _) in enumerate(THREATS)}


@dataclass
class PlannedScenario:
    kind: str
    tenant: int
    start: int  # hour of the window
    length: int  # hours
    model: int = -1  # surge: the model
    project: int = -1  # surge: the job's project; campaign: the abused API key's; storm: the client's
    magnitude: float = 1.0  # surge: call multiplier; campaign: detections an hour; storm: burst
    latency_factor: float = 1.0  # surge
    ip: str = ""  # campaign
    users: tuple[int, ...] = ()  # campaign
    models: tuple[int, ...] = ()  # campaign
    reject: float = 0.0  # storm: share of attempts the rate limiter rejects
    max_retries: int = 0  # storm
    breach_hour: int = 0  # storm: the budget is breached from this hour
    # Filled while simulating: rows and calls of what was injected.
    calls: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    request_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per request row
    detections: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    evaluations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def end(self) -> int:
        return self.start + self.length


def plan_scenarios(
    config: GeneratorConfig, catalogue: Catalogue, labels: list[dict]
) -> list[PlannedScenario]:
    """Where each tenant's scenarios go and their parameters, in order of start."""
    rng = config.rng("scenarios")
    start_ms = config.start_ms
    planned: list[PlannedScenario] = []
    for t, tenant in enumerate(catalogue.tenants):
        busy = [
            (
                (_ms(label["start"]) - start_ms) // HOUR_MS - LABEL_MARGIN_HOURS,
                (_ms(label["end"]) - start_ms) // HOUR_MS + LABEL_MARGIN_HOURS,
            )
            for label in labels
            if label["tenant_id"] == tenant.tenant_id
        ]
        shares = np.array([catalogue.projects[p].share for p in tenant.projects])
        model_shares = np.array(tenant.model_shares) / sum(tenant.model_shares)
        cycle: list[str] = []
        start = WARM_UP_HOURS + int(rng.integers(0, 24))
        while start < config.hours:
            if not cycle:
                cycle = [SCENARIO_KINDS[i] for i in rng.permutation(len(SCENARIO_KINDS))]
            kind = cycle[0]
            # Every parameter is drawn whether or not the scenario fits, so plans of windows of
            # different lengths agree on the scenarios they share.
            item = _draw(rng, kind, t, tenant.projects, shares, tenant.models, model_shares)
            if kind != "prompt_injection_campaign":
                item.start = _into_working_day(config, tenant.utc_offset_minutes, start)
            else:
                item.start = start
            tail = BUDGET_TAIL_HOURS if kind == "rate_limit_cascade" else 0
            if item.end + tail + 1 > config.hours:
                break
            if any(item.start < hi and lo < item.end + tail for lo, hi in busy):
                start += 12
                continue
            cycle.pop(0)
            if kind == "rate_limit_cascade":
                item.breach_hour = item.start + max(1, item.length // 2)
            planned.append(item)
            start = item.end + tail + int(rng.integers(SPACING_HOURS[0], SPACING_HOURS[1] + 1))
    planned.sort(key=lambda p: (p.start, p.tenant))
    return planned


def _draw(rng, kind, tenant, projects, shares, models, model_shares) -> PlannedScenario:
    project = int(
        projects[min(int(np.searchsorted(np.cumsum(shares) / shares.sum(), rng.random())), len(shares) - 1)]
    )
    if kind == "traffic_surge":
        return PlannedScenario(
            kind, tenant, 0, int(rng.integers(SURGE_HOURS[0], SURGE_HOURS[1] + 1)),
            model=int(rng.choice(models, p=model_shares)), project=project,
            magnitude=float(rng.uniform(*SURGE_VOLUME)), latency_factor=float(rng.uniform(*SURGE_LATENCY)),
        )  # fmt: skip
    if kind == "prompt_injection_campaign":
        n_models = int(rng.integers(2, len(models) + 1))
        return PlannedScenario(
            kind, tenant, 0, int(rng.integers(CAMPAIGN_HOURS[0], CAMPAIGN_HOURS[1] + 1)),
            project=project, magnitude=float(rng.uniform(*CAMPAIGN_RATE)),
            ip=f"198.18.{int(rng.integers(0, 256))}.{int(rng.integers(1, 255))}",
            users=tuple(int(u) for u in rng.choice(np.arange(1, 500), size=int(rng.integers(2, 5)), replace=False)),
            models=tuple(sorted(int(m) for m in rng.choice(models, size=n_models, replace=False))),
        )  # fmt: skip
    return PlannedScenario(
        kind, tenant, 0, int(rng.integers(STORM_HOURS[0], STORM_HOURS[1] + 1)), project=project,
        magnitude=float(rng.uniform(*STORM_BURST)), reject=float(rng.uniform(*STORM_REJECT)),
        max_retries=int(rng.integers(STORM_RETRIES[0], STORM_RETRIES[1] + 1)),
    )  # fmt: skip


def _ms(text: str) -> int:
    return int(np.datetime64(text.replace("Z", ""), "ms").astype(np.int64))


# -- simulation ----------------------------------------------------------------------------------


def simulate_with_scenarios(
    config: GeneratorConfig,
    catalogue: Catalogue,
    effects: AnomalyEffects,
    labels: list[dict],
    seasonal: np.ndarray,
) -> Simulation:
    """`simulate` with the planned scenarios injected (see the module docstring)."""
    plan = plan_scenarios(config, catalogue, labels)
    for item in plan:
        if item.kind == "traffic_surge":  # the overloaded model is slow for every caller
            effects.latency[item.start : item.end, item.tenant, item.model] *= item.latency_factor
    requests = _simulate_requests(config, catalogue, effects, seasonal)
    model = _RequestModel(config, catalogue, effects, seasonal)
    rng = config.rng("scenario-traffic")
    next_call = int(requests.call.max()) + 1 if len(requests) else 0
    base = _base_rates(config, catalogue)
    extra: list[Requests] = []
    owners: list[tuple[PlannedScenario, np.ndarray]] = []
    for item in plan:
        if item.kind == "traffic_surge":
            part = _surge_calls(item, config, catalogue, model, base, seasonal, rng, next_call)
            rejected = np.zeros(len(part), dtype=bool)
        elif item.kind == "rate_limit_cascade":
            part, rejected = _storm_calls(item, config, catalogue, model, base, seasonal, rng, next_call)
        else:
            part, rejected = _campaign_calls(item, config, catalogue, model, rng, next_call)
        item.calls = np.unique(part.call)
        next_call = int(part.call.max()) + 1 if len(part) else next_call
        extra.append(part)
        owners.append((item, rejected))
    requests, rows = _merge_requests(requests, extra, len(catalogue.tenants), len(catalogue.models))
    for (item, rejected), part_rows in zip(owners, rows, strict=True):
        order = np.argsort(part_rows)
        item.request_rows, item.rejected = part_rows[order], rejected[order]
    security = _simulate_security(config, catalogue, effects, seasonal)
    policy = _simulate_policy(config, requests)
    security, policy = _inject_security_and_policy(plan, config, catalogue, requests, security, policy, rng)
    sim = Simulation(
        config=config,
        catalogue=catalogue,
        requests=requests,
        security=security,
        policy=policy,
        governance=_simulate_governance(config, catalogue),
        registry=_simulate_registry(config, catalogue),
        labels=labels,
        effects=effects,
    )
    sim.scenarios = ground_truth(sim, plan)
    return sim


def _base_rates(config: GeneratorConfig, catalogue: Catalogue) -> np.ndarray:
    """(T, M) mean calls an hour before seasonality, as `_simulate_requests` draws them."""
    base = np.zeros((len(catalogue.tenants), len(catalogue.models)))
    for t, tenant in enumerate(catalogue.tenants):
        for m, share in zip(tenant.models, tenant.model_shares, strict=True):
            base[t, m] = config.requests_per_hour * tenant.size * share
    return base


def _calls(config, item, hours, models, counts, rng, first_call, catalogue) -> dict[str, np.ndarray]:
    """Identity columns of new first attempts: `counts[i]` calls of `models[i]` in `hours[i]`."""
    hour = np.repeat(np.asarray(hours, dtype=np.int32), counts)
    model = np.repeat(np.asarray(models, dtype=np.int16), counts)
    n = len(hour)
    tenant = catalogue.tenants[item.tenant]
    return {
        "ts_ms": config.start_ms + hour.astype(np.int64) * HOUR_MS + rng.integers(0, HOUR_MS, n),
        "hour": hour,
        "tenant": np.full(n, item.tenant, dtype=np.int16),
        "model": model,
        "project": np.full(n, item.project, dtype=np.int16),
        "region": np.full(n, tenant.regions[0], dtype=np.int8),
        "environment": np.zeros(n, dtype=np.int8),  # production
        "call": np.arange(first_call, first_call + n, dtype=np.int64),
        "retry": np.zeros(n, dtype=np.int8),
    }


def _surge_calls(item, config, catalogue, model, base, seasonal, rng, first_call) -> Requests:
    """The job's extra calls (x magnitude - 1 of the model's usual calls), retried as usual."""
    hours = np.arange(item.start, item.end)
    expected = (item.magnitude - 1.0) * base[item.tenant, item.model] * seasonal[hours, item.tenant]
    counts = rng.poisson(expected)
    identity = _calls(config, item, hours, [item.model] * len(hours), counts, rng, first_call, catalogue)
    parts = [model.outcomes(rng, identity)]
    for attempt in range(1, MAX_RETRIES + 1):
        parts.append(model.retries(rng, parts[-1], attempt))
    return _concat(parts)


def _storm_calls(
    item, config, catalogue, model, base, seasonal, rng, first_call
) -> tuple[Requests, np.ndarray]:
    """The client's burst (x magnitude - 1 of the project's usual calls, over the tenant's models)
    and its retry storm: the rate limiter rejects each attempt with probability `reject` (fast,
    HTTP 429 errors that still bill the prompt) and the client retries every failure at once."""
    tenant = catalogue.tenants[item.tenant]
    project_share = catalogue.projects[item.project].share / sum(
        catalogue.projects[p].share for p in tenant.projects
    )
    hours, models, counts = [], [], []
    for h in range(item.start, item.end):
        for m in tenant.models:
            expected = (
                (item.magnitude - 1.0) * base[item.tenant, m] * seasonal[h, item.tenant] * project_share
            )
            hours.append(h)
            models.append(m)
            counts.append(int(rng.poisson(expected)))
    identity = _calls(config, item, hours, models, np.array(counts), rng, first_call, catalogue)
    attempts = [_rate_limited(model.outcomes(rng, identity), item.reject, model, rng)]
    for attempt in range(1, item.max_retries + 1):
        previous = attempts[-1][0]
        rows = np.flatnonzero((previous.status != STATUS_OK) & (rng.random(len(previous)) < 0.95))
        backoff = np.rint(rng.uniform(200, 800, len(rows)) * 1.3**attempt).astype(np.int64)
        sent = previous.ts_ms[rows] + np.ceil(previous.latency_ms[rows]).astype(np.int64) + backoff
        keep = sent < config.end_ms
        rows, sent = rows[keep], sent[keep]
        identity = {
            name: getattr(previous, name)[rows]
            for name in ("tenant", "model", "project", "region", "environment", "call")
        }
        identity |= {
            "ts_ms": sent,
            "hour": ((sent - config.start_ms) // HOUR_MS).astype(np.int32),
            "retry": np.full(len(rows), min(attempt, 127), dtype=np.int8),
        }
        attempts.append(_rate_limited(model.outcomes(rng, identity), item.reject, model, rng))
    return _concat([a for a, _ in attempts]), np.concatenate([r for _, r in attempts])


def _rate_limited(
    attempts: Requests, reject: float, model: _RequestModel, rng
) -> tuple[Requests, np.ndarray]:
    """Attempts the rate limiter turned away: an error in 8-40 ms, no completion, the prompt billed."""
    rejected = rng.random(len(attempts)) < reject
    if not rejected.any():
        return attempts, rejected
    latency = rng.uniform(8.0, 40.0, len(attempts))
    tenths = np.rint(latency * 10.0)
    fast = np.where(attempts.latency_in_seconds, (tenths / 10_000.0) * 1000.0, tenths / 10.0)
    m = attempts.model
    usd = attempts.tokens_input * model.usd_per_1k_input[m] / 1000.0
    fx = model.fx[attempts.currency]
    amount = np.maximum(np.round(usd / fx, 8), 1e-8)
    attempts.status = np.where(rejected, STATUS_ERROR, attempts.status).astype(np.int8)
    attempts.latency_ms = np.where(rejected, fast, attempts.latency_ms)
    attempts.tokens_output = np.where(rejected, 0, attempts.tokens_output).astype(np.int32)
    attempts.amount = np.where(rejected, amount, attempts.amount)
    attempts.cost_usd = attempts.amount * fx
    return attempts, rejected


def _merge_requests(
    requests: Requests, extra: list[Requests], n_tenants: int, n_models: int
) -> tuple[Requests, list[np.ndarray]]:
    """Requests with the scenarios' attempts, in the simulation's (hour, tenant, model) order, and
    the rows each part's attempts went to."""
    if not extra:
        return requests, []
    merged = _concat([requests, *extra])
    key = (merged.hour.astype(np.int64) * n_tenants + merged.tenant) * n_models + merged.model
    order = np.argsort(key, kind="stable")
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    rows, offset = [], len(requests)
    for part in extra:
        rows.append(position[offset : offset + len(part)])
        offset += len(part)
    return merged.take(order), rows


def _inject_security_and_policy(plan, config, catalogue, requests, security, policy, rng):
    """Detections of the campaigns (linked to requests) and the evaluations of every scenario."""
    n_tenants = len(catalogue.tenants)
    new_detections: list[dict[str, np.ndarray]] = []
    new_evaluations: list[
        tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    ] = []  # ts, request, rule, failed
    owners: list[tuple[int, str]] = []  # (scenario index, "detections" | "evaluations") per part
    for number, item in enumerate(plan):
        if item.kind == "prompt_injection_campaign":
            part, evaluations = _campaign(item, config, requests, rng)
            new_detections.append(part)
            owners.append((number, "detections"))
            new_evaluations.append(evaluations)
            owners.append((number, "evaluations"))
        elif item.kind == "rate_limit_cascade":
            rows, rejected = item.request_rows, item.rejected
            ts = np.maximum(requests.ts_ms[rows] - rng.integers(2, 40, len(rows)), config.start_ms)
            new_evaluations.append((ts, rows, np.full(len(rows), RATE_LIMIT_RULE, dtype=np.int8), rejected))
            owners.append((number, "evaluations"))
            # The budget guard denies the project's attempts from the breach until after the storm.
            lo = config.start_ms + item.breach_hour * HOUR_MS
            hi = config.start_ms + (item.end + BUDGET_TAIL_HOURS) * HOUR_MS
            in_window = np.flatnonzero(
                (requests.tenant == item.tenant) & (requests.project == item.project)
                & (requests.ts_ms >= lo) & (requests.ts_ms < hi)
            )  # fmt: skip
            chosen = in_window[rng.random(len(in_window)) < 0.8]
            ts = np.maximum(requests.ts_ms[chosen] - rng.integers(2, 40, len(chosen)), config.start_ms)
            new_evaluations.append(
                (
                    ts,
                    chosen,
                    np.full(len(chosen), BUDGET_RULE, dtype=np.int8),
                    np.ones(len(chosen), dtype=bool),
                )
            )
            owners.append((number, "evaluations"))
    # Detections: appended, then back into (hour, tenant) order; remember where each new one went.
    n_before = len(security)
    if new_detections:
        names = (
            "ts_ms",
            "hour",
            "tenant",
            "threat",
            "severity",
            "model",
            "project",
            "user",
            "ip",
            "action",
            "confidence",
        )
        columns = {
            name: np.concatenate(
                [getattr(security, name)]
                + [d[name].astype(getattr(security, name).dtype) for d in new_detections]
            )
            for name in names
        }
        columns["call"] = np.concatenate(
            [np.full(n_before, -1, dtype=np.int64)] + [d["call"] for d in new_detections]
        )
        key = columns["hour"].astype(np.int64) * n_tenants + columns["tenant"]
        order = np.argsort(key, kind="stable")
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        security = SecurityDetections(**{name: values[order] for name, values in columns.items()})
    else:
        position = np.arange(n_before)
        security = SecurityDetections(**{**security.__dict__, "call": np.full(n_before, -1, dtype=np.int64)})
    # Evaluations: appended after the usual ones (the writer orders each day by time).
    n_policy = len(policy)
    offset_d, offset_e = n_before, n_policy
    parts_d, parts_e = iter(new_detections), iter(new_evaluations)
    for number, what in owners:
        item = plan[number]
        if what == "detections":
            part = next(parts_d)
            n = len(part["ts_ms"])
            item.detections = np.sort(position[offset_d : offset_d + n])
            offset_d += n
        else:
            part = next(parts_e)
            n = len(part[0])
            item.evaluations = np.concatenate([item.evaluations, np.arange(offset_e, offset_e + n)])
            offset_e += n
    if new_evaluations:
        policy = PolicyEvaluations(
            ts_ms=np.concatenate([policy.ts_ms] + [e[0] for e in new_evaluations]),
            request=np.concatenate([policy.request] + [e[1] for e in new_evaluations]),
            rule=np.concatenate([policy.rule] + [e[2] for e in new_evaluations]).astype(np.int8),
            failed=np.concatenate([policy.failed] + [e[3] for e in new_evaluations]),
        )
    return security, policy


def _campaign_calls(item, config, catalogue, model, rng, first_call) -> tuple[Requests, np.ndarray]:
    """The attacker's requests: about `magnitude` an hour through the abused project's key, spread
    over the targeted models; the sentinel blocks each before it reaches the provider (a fast error
    with no completion)."""
    counts = rng.poisson(item.magnitude, item.length)
    hours = np.repeat(np.arange(item.start, item.end), counts)
    models = np.asarray(item.models)[rng.integers(0, len(item.models), len(hours))]
    identity = _calls(
        config, item, hours, models, np.ones(len(hours), dtype=np.int64), rng, first_call, catalogue
    )
    return _rate_limited(model.outcomes(rng, identity), 1.0, model, rng)


def _campaign(item: PlannedScenario, config: GeneratorConfig, requests: Requests, rng):
    """One detection on each of the attacker's requests (sharing its correlation id), from the
    campaign's IP and accounts, and the content-safety denials of about 60% of them."""
    rows = item.request_rows
    n = len(rows)
    threat = np.where(rng.random(n) < 0.85, _THREAT["prompt_injection"], _THREAT["jailbreak"]).astype(np.int8)
    severity = np.where(rng.random(n) < 0.6, 1, 2).astype(np.int8)  # error, critical
    user = np.asarray(item.users, dtype=np.int32)[rng.integers(0, len(item.users), n)]
    a, b, c, d = (int(x) for x in item.ip.split("."))
    ts = requests.ts_ms[rows] + rng.integers(5, 80, n)
    detections = {
        "ts_ms": ts, "hour": ((ts - config.start_ms) // HOUR_MS).astype(np.int32),
        "tenant": np.full(n, item.tenant, dtype=np.int16), "threat": threat, "severity": severity,
        "model": requests.model[rows], "project": np.full(n, item.project, dtype=np.int16), "user": user,
        "ip": np.full(n, a << 24 | b << 16 | c << 8 | d, dtype=np.uint32), "action": np.zeros(n, dtype=np.int8),
        "confidence": np.round(rng.uniform(0.8, 0.995, n), 3), "call": requests.call[rows],
    }  # fmt: skip
    denied = rows[rng.random(n) < 0.6]
    eval_ts = np.maximum(requests.ts_ms[denied] - rng.integers(2, 40, len(denied)), config.start_ms)
    evaluations = (
        eval_ts,
        denied,
        np.full(len(denied), CONTENT_RULE, dtype=np.int8),
        np.ones(len(denied), dtype=bool),
    )
    return detections, evaluations


# -- ground truth --------------------------------------------------------------------------------


def ground_truth(sim: Simulation, plan: list[PlannedScenario]) -> list[dict]:
    """One record per scenario: its root cause, window, effects, the series they move, and the
    ids of the injected events and calls (as the batch files write them)."""
    cat, r, seed = sim.catalogue, sim.requests, sim.config.seed
    start_ms = sim.config.start_ms
    out = []
    for number, item in enumerate(plan, start=1):
        tenant = cat.tenants[item.tenant].tenant_id
        project = cat.projects[item.project].name if item.project >= 0 else None
        request_rows = item.request_rows
        event_ids: list[str] = []
        if len(request_rows):
            event_ids += uuids(seed, NS_REQUEST_EVENT, (request_rows[:, None] * 4 + np.arange(4)).ravel())
        event_ids += uuids(seed, "security", item.detections)
        event_ids += uuids(seed, "policy", item.evaluations)
        linked_calls = np.unique(
            np.concatenate([item.calls, r.call[sim.policy.request[item.evaluations]]])
            if len(item.evaluations)
            else item.calls
        )
        end = item.end + (BUDGET_TAIL_HOURS if item.kind == "rate_limit_cascade" else 0)
        record = {
            "id": f"scenario-{number:03d}",
            "kind": item.kind,
            "tenant_id": tenant,
            "start": format_utc(_utc(start_ms + item.start * HOUR_MS)),
            "end": format_utc(_utc(start_ms + end * HOUR_MS)),
        }
        if item.kind == "traffic_surge":
            model = cat.models[item.model].name
            record |= {
                "root_cause": {
                    "cause": "traffic_surge", "module": "llm-observatory", "model": model, "project": project,
                    "description": f"a batch job of {project} sent x{item.magnitude:.1f} the usual calls to {model}",
                },
                "effects": [
                    {"effect": "cost_spike", "module": "llm-costops", "model": model, "metrics": ["spend_usd"]},
                    {"effect": "latency_degradation", "module": "llm-observatory", "model": model,
                     "metrics": ["latency_avg_ms", "latency_p95_ms"], "factor": round(item.latency_factor, 3)},
                ],
                "series": [f"{tenant}|{m}|{model}" for m in ("requests", "spend_usd", "latency_p95_ms")],
                "magnitude": round(item.magnitude, 3),
            }  # fmt: skip
        elif item.kind == "prompt_injection_campaign":
            models = [cat.models[m].name for m in item.models]
            record |= {
                "root_cause": {
                    "cause": "attack_from_ip", "module": "llm-sentinel", "ip": item.ip,
                    "threat_type": "prompt_injection",
                    "description": f"prompt injections from {item.ip} against {', '.join(models)}",
                },
                "effects": [
                    {"effect": "security_detections", "module": "llm-sentinel", "models": models,
                     "users": [f"user-{u:04d}" for u in item.users],
                     "api_key_id": cat.projects[item.project].api_key_id, "project": project},
                    {"effect": "policy_denials", "module": "llm-policy-engine", "policy_id": POLICIES[CONTENT_RULE][0]},
                ],
                "series": [f"{tenant}|threats"],
                "magnitude": round(item.magnitude, 3),
            }  # fmt: skip
        else:
            record |= {
                "root_cause": {
                    "cause": "rate_limit_violation", "module": "llm-policy-engine", "project": project,
                    "api_key_id": cat.projects[item.project].api_key_id, "policy_id": POLICIES[RATE_LIMIT_RULE][0],
                    "description": f"the client of {project} burst to x{item.magnitude:.1f} its calls, past the rate limit",
                },
                "effects": [
                    {"effect": "retry_storm", "module": "llm-observatory", "project": project,
                     "metrics": ["requests", "errors", "error_rate"], "max_retries": item.max_retries},
                    {"effect": "budget_breach", "module": "llm-policy-engine", "project": project,
                     "policy_id": POLICIES[BUDGET_RULE][0],
                     "start": format_utc(_utc(start_ms + item.breach_hour * HOUR_MS))},
                    {"effect": "cost_spike", "module": "llm-costops", "project": project, "metrics": ["spend_usd"]},
                ],
                "series": [f"{tenant}|{m}|{project}" for m in ("requests", "errors", "spend_usd")],
                "magnitude": round(item.magnitude, 3),
            }  # fmt: skip
        modules = {record["root_cause"]["module"], *(e["module"] for e in record["effects"])}
        if len(request_rows):
            modules |= {"llm-observatory", "llm-costops"}
        record["modules"] = sorted(modules)
        record["counts"] = {
            "calls": len(item.calls),
            "attempts": len(request_rows),
            "detections": len(item.detections),
            "evaluations": len(item.evaluations),
            "events": len(event_ids),
        }
        record["correlation_ids"] = hex_ids(seed, NS_CALL, linked_calls, "corr-")
        record["event_ids"] = event_ids
        out.append(record)
    return out


def _utc(ms: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC)
