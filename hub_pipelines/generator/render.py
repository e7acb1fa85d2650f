"""Events as JSON text, one source module at a time, in the forms each source really sends.

- llm-observatory: telemetry latency_ms (ms, or seconds for some agents), tokens_input and
  tokens_output, timestamps in the tenant's own offset; one tenant's agent still on the legacy 1.x
  layout (id, ts in epoch milliseconds, module, type, tenant, payload metric/value/labels).
- llm-costops: one inference cost per request, USD or the project's EUR/GBP, timestamps in Z.
- llm-sentinel: security detections, timestamps in +00:00.
- llm-policy-engine: its own names (evaluation_id, evaluated_at, org_id; rule_id, rule_category,
  decision allow|deny), timestamps in the tenant's offset without a colon (+0530).
- llm-governance: approvals, access reviews, audit logs; timestamps in the tenant's offset.
- llm-registry: its own names (record_id, recorded_at, organization; model_id, display_name,
  model_version, owner_team, kind), timestamps in Z.

The bulk (three telemetry events and one cost event per request) is rendered with string templates
over precomputed columns: fragments that repeat (dimensions, attribution, envelope heads) are
serialised once per distinct combination with orjson and looked up per row. The rarer sources go
through orjson one event at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson

from hub_pipelines.generator.catalogue import (
    ENVIRONMENTS,
    POLICIES,
    REGIONS,
    SECURITY_SEVERITIES,
    STATUSES,
    THREATS,
)
from hub_pipelines.generator.ids import hex_ids, uuids
from hub_pipelines.generator.simulation import Simulation

SOURCES: tuple[str, ...] = (
    "llm-observatory",
    "llm-costops",
    "llm-sentinel",
    "llm-policy-engine",
    "llm-governance",
    "llm-registry",
)
EVENT_TYPE_OF_SOURCE = {
    "llm-observatory": "telemetry",
    "llm-costops": "cost",
    "llm-sentinel": "security",
    "llm-policy-engine": "policy",
    "llm-governance": "governance",
    "llm-registry": "metadata",
}
# Events per simulated item: each request gives three telemetry events.
EVENTS_PER_ITEM = {source: 3 if source == "llm-observatory" else 1 for source in SOURCES}

OBSERVATORY_VERSION = "2.1.0"
LEGACY_VERSION = "1.4.2"
COSTOPS_VERSION = "2.0.0"
SENTINEL_VERSION = "2.2.0"
POLICY_VERSION = "2.0.1"
GOVERNANCE_VERSION = "2.0.0"
REGISTRY_VERSION = "2.1.0"

# Namespaces of the deterministic ids; an event's id depends only on (seed, namespace, number).
NS_REQUEST_EVENT = "request-event"  # number = request row x 4 + (0 latency, 1 in, 2 out, 3 cost)
NS_CALL = "call"
NS_ATTEMPT = "attempt"  # number = call x 4 + retry (retries 0-3)
NS_ATTEMPT_MORE = "attempt-more"  # number = call x 128 + retry, for the retries past 3 of a retry storm
# Retry numbers an encoded dimension combination has room for (the generator's own clients retry
# at most twice; a scenario's retry storm more).
RETRY_CODES = 128


def _dumps(value) -> str:
    return orjson.dumps(value).decode()


def _inner(value: dict) -> str:
    """A JSON object's members without the braces, to be spliced into a template."""
    return _dumps(value)[1:-1]


def _per_row(codes: np.ndarray, build: Callable[[int], str]) -> list[str]:
    """build(code) for each row, calling build once per distinct code."""
    if len(codes) == 0:
        return []
    distinct, inverse = np.unique(codes, return_inverse=True)
    table = np.array([build(int(c)) for c in distinct.tolist()], dtype=object)
    return table[inverse].tolist()


def _attempt_ids(seed: int, call: np.ndarray, retry: np.ndarray) -> list[str]:
    """Request ids of attempts: (call, retry) numbered x 4 as they always were, and those past the
    fourth attempt (only scenarios make them) in a namespace of their own."""
    retry = retry.astype(np.int64)
    ids = hex_ids(seed, NS_ATTEMPT, call * 4 + np.minimum(retry, 3), "req_")
    more = np.flatnonzero(retry > 3)
    if len(more):
        extra = hex_ids(seed, NS_ATTEMPT_MORE, call[more] * RETRY_CODES + retry[more], "req_")
        for position, value in zip(more.tolist(), extra, strict=True):
            ids[position] = value
    return ids


def offset_suffix(minutes: int, colon: bool = True) -> str:
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}" if colon else f"{sign}{hours:02d}{mins:02d}"


def iso_times(ts_ms: np.ndarray, offsets: np.ndarray | None, style: str) -> list[str]:
    """ISO-8601 with milliseconds. style: "Z", "+00:00", "local" (+05:30) or "local_compact"
    (+0530); offsets are minutes east of UTC per row (local styles only)."""
    if len(ts_ms) == 0:
        return []
    if style in ("Z", "+00:00"):
        text = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms").tolist()
        return [t + style for t in text]
    assert offsets is not None
    local = ts_ms + offsets.astype(np.int64) * 60_000
    text = np.datetime_as_string(local.astype("datetime64[ms]"), unit="ms").tolist()
    suffixes = _per_row(offsets, lambda m: offset_suffix(m, colon=style == "local"))
    return [t + s for t, s in zip(text, suffixes, strict=True)]


class Renderer:
    """Renders the simulation's events of one source for a set of rows (one day), in time order."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.seed = sim.config.seed
        cat = sim.catalogue
        self.offsets = np.array([t.utc_offset_minutes for t in cat.tenants], dtype=np.int64)
        self.tenant_ids = [t.tenant_id for t in cat.tenants]
        self.model_assets = {
            (t, m): f"{spec.tenant_id}:model:{cat.models[m].name}"
            for t, spec in enumerate(cat.tenants)
            for m in spec.models
        }
        self._corr_cache: tuple[np.ndarray, list[str]] | None = None

    # -- requests: llm-observatory and llm-costops ------------------------------------------------
    def _correlation_ids(self, rows: np.ndarray) -> list[str]:
        """Correlation ids of request rows; the costops file of a day asks for the same rows as the
        observatory file, so the last answer is kept."""
        if self._corr_cache is not None and np.array_equal(self._corr_cache[0], rows):
            return self._corr_cache[1]
        corr = hex_ids(self.seed, NS_CALL, self.sim.requests.call[rows], "corr-")
        self._corr_cache = (rows, corr)
        return corr

    def observatory(self, rows: np.ndarray) -> list[str]:
        """Three telemetry lines per request row (latency, tokens in, tokens out)."""
        if len(rows) == 0:
            return []
        cat, r = self.sim.catalogue, self.sim.requests
        tenant = r.tenant[rows]
        ids = uuids(self.seed, NS_REQUEST_EVENT, (rows.astype(np.int64)[:, None] * 4 + np.arange(3)).ravel())
        lat_ids, in_ids, out_ids = ids[0::3], ids[1::3], ids[2::3]
        corr = self._correlation_ids(rows)
        n_projects, n_regions = len(cat.projects), len(REGIONS)

        def dims(code: int) -> str:
            code, retry = divmod(code, RETRY_CODES)
            code, status = divmod(code, len(STATUSES))
            code, region = divmod(code, n_regions)
            model, project = divmod(code, n_projects)
            spec, proj = cat.models[model], cat.projects[project]
            return _inner(
                {
                    "model": spec.name,
                    "provider": spec.provider,
                    "project": proj.name,
                    "team": proj.team,
                    "region": REGIONS[region],
                    "status": STATUSES[status],
                    "retry_count": retry,
                }
            )

        combo = (
            ((r.model[rows].astype(np.int64) * n_projects + r.project[rows]) * n_regions + r.region[rows])
            * len(STATUSES)
            + r.status[rows]
        ) * RETRY_CODES + r.retry[rows]
        dimensions = _per_row(combo, dims)
        tenths = np.rint(r.latency_ms[rows] * 10.0)
        seconds = r.latency_in_seconds[rows]
        latency_value = np.where(seconds, tenths / 10_000.0, tenths / 10.0).tolist()
        latency_unit = np.where(seconds, "s", "ms").tolist()
        tokens_in = r.tokens_input[rows].tolist()
        tokens_out = r.tokens_output[rows].tolist()
        legacy_tenants = [t for t, spec in enumerate(cat.tenants) if spec.legacy_observatory]
        legacy = np.isin(tenant, legacy_tenants)
        env_code = tenant.astype(np.int64) * len(ENVIRONMENTS) + r.environment[rows]
        out = np.empty(3 * len(rows), dtype=object)
        modern = np.flatnonzero(~legacy)
        if len(modern):

            def head(code: int) -> str:
                t, env = divmod(code, len(ENVIRONMENTS))
                fields = {
                    "source_module": "llm-observatory",
                    "event_type": "telemetry",
                    "schema_version": OBSERVATORY_VERSION,
                    "tenant_id": self.tenant_ids[t],
                    "environment": ENVIRONMENTS[env],
                }
                if cat.tenants[t].sdk_tag:
                    fields["tags"] = {"sdk": cat.tenants[t].sdk_tag}
                return _inner(fields)

            heads = _per_row(env_code[modern], head)
            times = iso_times(r.ts_ms[rows][modern], self.offsets[tenant[modern]], "local")
            m = modern.tolist()
            lat = [
                f'{{"event_id":"{lat_ids[i]}","timestamp":"{ts}",{hd},"correlation_id":"{corr[i]}",'
                f'"payload":{{"metric_name":"latency_ms","metric_value":{latency_value[i]},'
                f'"unit":"{latency_unit[i]}","dimensions":{{{dimensions[i]}}}}}}}'
                for i, ts, hd in zip(m, times, heads, strict=True)
            ]
            tin = [
                f'{{"event_id":"{in_ids[i]}","timestamp":"{ts}",{hd},"correlation_id":"{corr[i]}",'
                f'"payload":{{"metric_name":"tokens_input","metric_value":{tokens_in[i]},'
                f'"unit":"tokens","dimensions":{{{dimensions[i]}}}}}}}'
                for i, ts, hd in zip(m, times, heads, strict=True)
            ]
            tout = [
                f'{{"event_id":"{out_ids[i]}","timestamp":"{ts}",{hd},"correlation_id":"{corr[i]}",'
                f'"payload":{{"metric_name":"tokens_output","metric_value":{tokens_out[i]},'
                f'"unit":"tokens","dimensions":{{{dimensions[i]}}}}}}}'
                for i, ts, hd in zip(m, times, heads, strict=True)
            ]
            out[3 * modern] = lat
            out[3 * modern + 1] = tin
            out[3 * modern + 2] = tout
        old = np.flatnonzero(legacy)
        if len(old):
            # The legacy agent: short names, epoch milliseconds, metric/value/labels, count units.
            heads = _per_row(
                env_code[old],
                lambda code: _inner(
                    {
                        "module": "llm-observatory",
                        "type": "telemetry",
                        "tenant": self.tenant_ids[code // len(ENVIRONMENTS)],
                        "schema_version": LEGACY_VERSION,
                        "env": ENVIRONMENTS[code % len(ENVIRONMENTS)],
                    }
                ),
            )
            millis = r.ts_ms[rows][old].tolist()
            o = old.tolist()
            out[3 * old] = [
                f'{{"id":"{lat_ids[i]}","ts":{ms},{hd},"correlation_id":"{corr[i]}","payload":{{"metric":"latency_ms",'
                f'"value":{latency_value[i]},"unit":"ms","labels":{{{dimensions[i]}}}}}}}'
                for i, ms, hd in zip(o, millis, heads, strict=True)
            ]
            out[3 * old + 1] = [
                f'{{"id":"{in_ids[i]}","ts":{ms},{hd},"correlation_id":"{corr[i]}","payload":{{"metric":"tokens_input",'
                f'"value":{tokens_in[i]},"unit":"count","labels":{{{dimensions[i]}}}}}}}'
                for i, ms, hd in zip(o, millis, heads, strict=True)
            ]
            out[3 * old + 2] = [
                f'{{"id":"{out_ids[i]}","ts":{ms},{hd},"correlation_id":"{corr[i]}","payload":{{"metric":"tokens_output",'
                f'"value":{tokens_out[i]},"unit":"count","labels":{{{dimensions[i]}}}}}}}'
                for i, ms, hd in zip(o, millis, heads, strict=True)
            ]
        return out.tolist()

    def costops(self, rows: np.ndarray) -> list[str]:
        """One inference cost event per request row."""
        if len(rows) == 0:
            return []
        cat, r = self.sim.catalogue, self.sim.requests
        ids = uuids(self.seed, NS_REQUEST_EVENT, rows.astype(np.int64) * 4 + 3)
        corr = self._correlation_ids(rows)
        request_ids = _attempt_ids(self.seed, r.call[rows], r.retry[rows])
        tenant = r.tenant[rows]
        n_models, n_regions = len(cat.models), len(REGIONS)

        def head(code: int) -> str:
            t, env = divmod(code, len(ENVIRONMENTS))
            return _inner(
                {
                    "source_module": "llm-costops",
                    "event_type": "cost",
                    "schema_version": COSTOPS_VERSION,
                    "tenant_id": self.tenant_ids[t],
                    "environment": ENVIRONMENTS[env],
                }
            )

        def attribution(code: int) -> str:
            code, region = divmod(code, n_regions)
            project, model = divmod(code, n_models)
            proj, spec = cat.projects[project], cat.models[model]
            currency = _dumps(proj.currency)
            members = _inner(
                {
                    "project": proj.name,
                    "team": proj.team,
                    "model": spec.name,
                    "provider": spec.provider,
                    "region": REGIONS[region],
                }
            )
            return f'"currency":{currency},"attribution":{{{members}'

        heads = _per_row(tenant.astype(np.int64) * len(ENVIRONMENTS) + r.environment[rows], head)
        attributions = _per_row(
            (r.project[rows].astype(np.int64) * n_models + r.model[rows]) * n_regions + r.region[rows],
            attribution,
        )
        times = iso_times(r.ts_ms[rows], None, "Z")
        amounts = r.amount[rows].tolist()
        tokens_in = r.tokens_input[rows].tolist()
        tokens_out = r.tokens_output[rows].tolist()
        return [
            f'{{"event_id":"{eid}","timestamp":"{ts}",{hd},"correlation_id":"{c}","payload":{{"cost_type":"inference",'
            f'"amount":{amount},{attr},"request_id":"{rid}","input_tokens":{tin},"output_tokens":{tout}}}}}}}'
            for eid, ts, hd, c, amount, attr, rid, tin, tout in zip(
                ids,
                times,
                heads,
                corr,
                amounts,
                attributions,
                request_ids,
                tokens_in,
                tokens_out,
                strict=True,
            )
        ]

    # -- the rarer sources ------------------------------------------------------------------------
    def sentinel(self, rows: np.ndarray) -> list[str]:
        cat, s = self.sim.catalogue, self.sim.security
        ids = uuids(self.seed, "security", rows)
        times = iso_times(s.ts_ms[rows], None, "+00:00")
        actions = ("blocked", "flagged", "allowed")
        corr = None
        if s.call is not None:  # scenarios link detections to the request they were raised on
            calls = s.call[rows]
            linked = hex_ids(self.seed, NS_CALL, np.maximum(calls, 0), "corr-")
            corr = [c if call >= 0 else "" for c, call in zip(linked, calls.tolist(), strict=True)]
        out = []
        for k, i in enumerate(rows.tolist()):
            t = int(s.tenant[i])
            threat, _, description = THREATS[int(s.threat[i])]
            severity = SECURITY_SEVERITIES[int(s.severity[i])]
            ip = int(s.ip[i])
            project = cat.projects[int(s.project[i])]
            event = {
                "event_id": ids[k],
                "timestamp": times[k],
                "source_module": "llm-sentinel",
                "event_type": "security",
                "schema_version": SENTINEL_VERSION,
                "tenant_id": self.tenant_ids[t],
                "severity": severity,
                "environment": "production",
                **({"correlation_id": corr[k]} if corr is not None and corr[k] else {}),
                "payload": {
                    "threat_type": threat,
                    "severity": severity,
                    "description": description,
                    "indicators": {
                        "ip": f"{ip >> 24}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}",
                        "user_id": f"user-{int(s.user[i]):04d}",
                        "model": cat.models[int(s.model[i])].name,
                        "api_key_id": project.api_key_id,
                        "project": project.name,
                    },
                    "action_taken": actions[int(s.action[i])],
                    "confidence": float(s.confidence[i]),
                },
            }
            out.append(_dumps(event))
        return out

    def policy_engine(self, rows: np.ndarray) -> list[str]:
        cat, p, r = self.sim.catalogue, self.sim.policy, self.sim.requests
        ids = uuids(self.seed, "policy", rows)
        request = p.request[rows]
        tenant = r.tenant[request]
        times = iso_times(p.ts_ms[rows], self.offsets[tenant], "local_compact")
        corr = hex_ids(self.seed, NS_CALL, r.call[request], "corr-")
        out = []
        for k, (i, q) in enumerate(zip(rows.tolist(), request.tolist(), strict=True)):
            t, m = int(r.tenant[q]), int(r.model[q])
            rule_id, name, category, _, _ = POLICIES[int(p.rule[i])]
            project, spec = cat.projects[int(r.project[q])], cat.models[m]
            failed = bool(p.failed[i])
            payload = {
                "rule_id": rule_id,
                "rule_category": category,
                "decision": "deny" if failed else "allow",
                "policy_name": name,
                "asset_id": self.model_assets[(t, m)],
                "subject": {
                    "model": spec.name,
                    "provider": spec.provider,
                    "project": project.name,
                    "team": project.team,
                },
            }
            if failed:
                payload["reason"] = f"{name}: violated"
            event = {
                "evaluation_id": ids[k],
                "evaluated_at": times[k],
                "source_module": "llm-policy-engine",
                "event_type": "policy",
                "schema_version": POLICY_VERSION,
                "org_id": self.tenant_ids[t],
                "correlation_id": corr[k],
                "environment": ENVIRONMENTS[int(r.environment[q])],
                "payload": payload,
            }
            out.append(_dumps(event))
        return out

    def governance(self, rows: np.ndarray) -> list[str]:
        events = [self.sim.governance[i] for i in rows.tolist()]
        ids = uuids(self.seed, "governance", rows)
        ts = np.array([e["ts_ms"] for e in events], dtype=np.int64)
        tenants = np.array([e["tenant"] for e in events], dtype=np.int64)
        times = iso_times(ts, self.offsets[tenants] if len(events) else None, "local")
        out = []
        for k, e in enumerate(events):
            event = {
                "event_id": ids[k],
                "timestamp": times[k],
                "source_module": "llm-governance",
                "event_type": "governance",
                "schema_version": GOVERNANCE_VERSION,
                "tenant_id": self.tenant_ids[e["tenant"]],
                "environment": "production",
                "payload": {
                    "action": e["action"],
                    "actor": e["actor"],
                    "resource": e["resource"],
                    "status": e["status"],
                    "framework": e["framework"],
                    "details": {"ticket": e["ticket"], "team": e["team"]},
                },
            }
            out.append(_dumps(event))
        return out

    def registry(self, rows: np.ndarray) -> list[str]:
        events = [self.sim.registry[i] for i in rows.tolist()]
        ids = uuids(self.seed, "registry", rows)
        times = iso_times(np.array([e["ts_ms"] for e in events], dtype=np.int64), None, "Z")
        out = []
        for k, e in enumerate(events):
            payload = {
                "model_id": e["asset_id"],
                "display_name": e["asset_name"],
                "kind": e["asset_type"],
                "model_version": e["version"],
                "owner_team": e["owner"],
                "lifecycle_stage": e["lifecycle_stage"],
                "depends_on": e["depends_on"],
            }
            if e["asset_type"] == "model":
                payload["provider"] = e["provider"]
                payload["model"] = e["model"]
            event = {
                "record_id": ids[k],
                "recorded_at": times[k],
                "source_module": "llm-registry",
                "event_type": "metadata",
                "schema_version": REGISTRY_VERSION,
                "organization": self.tenant_ids[e["tenant"]],
                "payload": payload,
            }
            out.append(_dumps(event))
        return out
