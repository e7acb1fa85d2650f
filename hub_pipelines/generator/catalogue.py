"""The simulated estate: models with providers and prices, tenants with projects, teams, regions
and timezones, and the vocabularies of the security, policy and governance sources."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hub_pipelines.generator.config import GeneratorConfig


@dataclass(frozen=True)
class ModelSpec:
    """One model as a provider sells it. Prices are USD per 1k tokens (list prices of 2024-25);
    token counts are lognormal (median, sigma of the log); latency is a fixed part plus time per
    output token."""

    name: str
    provider: str
    snapshot: str  # the provider's version of the model, as the registry records it
    usd_per_1k_input: float
    usd_per_1k_output: float
    input_median: float
    input_sigma: float
    output_median: float
    output_sigma: float
    base_latency_ms: float
    ms_per_output_token: float
    error_rate: float
    timeout_rate: float
    timeout_ms: float


# fmt: off
MODELS: tuple[ModelSpec, ...] = (
    #         name             provider     snapshot       $/1k in   $/1k out  in med/sigma  out med/sigma  base ms  ms/tok  errors  timeouts  timeout ms
    ModelSpec("gpt-4o", "openai", "2024-08-06", 0.0025, 0.010, 900, 0.8, 280, 0.6, 320, 11.0, 0.012, 0.004, 60_000),
    ModelSpec("gpt-4o-mini", "openai", "2024-07-18", 0.00015, 0.0006, 700, 0.8, 220, 0.6, 210, 6.5, 0.010, 0.002, 30_000),
    ModelSpec("claude-sonnet", "anthropic", "3.5-20241022", 0.003, 0.015, 1200, 0.8, 320, 0.6, 450, 13.0, 0.015, 0.005, 60_000),
    ModelSpec("claude-haiku", "anthropic", "3.5-20241022", 0.0008, 0.004, 800, 0.8, 200, 0.6, 260, 7.0, 0.010, 0.002, 30_000),
    # Open-weights models reach tenants through a hosting provider, which is who bills them.
    ModelSpec("llama-3-70b", "together", "3.1-instruct", 0.00088, 0.00088, 750, 0.7, 250, 0.6, 280, 9.0, 0.020, 0.006, 30_000),
    ModelSpec("mistral-large", "mistral", "2411", 0.002, 0.006, 850, 0.7, 260, 0.6, 350, 10.0, 0.018, 0.004, 45_000),
)
# fmt: on

# (timezone, UTC offset in minutes, regions near it). Zones without daylight saving time, so the
# offset written into timestamps is the tenant's real one all year.
TIMEZONES: tuple[tuple[str, int, tuple[str, str]], ...] = (
    ("America/Bogota", -300, ("us-east-1", "us-west-2")),
    ("Africa/Lagos", 60, ("eu-west-1", "eu-central-1")),
    ("Asia/Kolkata", 330, ("ap-south-1", "ap-southeast-1")),
    ("Etc/UTC", 0, ("eu-west-1", "us-east-1")),
    ("America/Phoenix", -420, ("us-west-2", "us-east-1")),
    ("Asia/Singapore", 480, ("ap-southeast-1", "ap-northeast-1")),
    ("America/Sao_Paulo", -180, ("sa-east-1", "us-east-1")),
    ("Asia/Tokyo", 540, ("ap-northeast-1", "ap-southeast-1")),
)
REGIONS: tuple[str, ...] = (
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "sa-east-1",
)
ENVIRONMENTS: tuple[str, ...] = ("production", "staging", "development")
ENVIRONMENT_SHARES = (0.9, 0.07, 0.03)
STATUSES: tuple[str, ...] = ("ok", "error", "timeout")

# (project, owning team, context factor: how long its prompts are relative to the model's median).
PROJECT_POOL: tuple[tuple[str, str, float], ...] = (
    ("support-assistant", "customer-success", 1.0),
    ("code-review", "platform", 1.6),
    ("search-rag", "data-science", 2.2),
    ("doc-summarizer", "knowledge", 2.6),
    ("sales-copilot", "growth", 0.8),
    ("fraud-triage", "risk", 0.9),
    ("content-moderation", "trust-safety", 0.5),
    ("internal-chat", "it", 0.7),
)
CURRENCIES: tuple[str, ...] = ("USD", "EUR", "GBP")


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    team: str
    tenant: int  # index into Catalogue.tenants
    share: float  # of the tenant's requests
    context_factor: float
    currency: str  # the currency its cost centre reports in
    api_key_id: str


@dataclass(frozen=True)
class TenantSpec:
    tenant_id: str
    timezone: str
    utc_offset_minutes: int
    size: float  # volume multiplier relative to a base tenant
    growth_per_year: float  # linear trend of volume
    regions: tuple[int, int]  # primary, secondary (indices into REGIONS)
    models: tuple[int, ...]  # indices into MODELS, busiest first
    model_shares: tuple[float, ...]  # volume of each model relative to the busiest
    projects: tuple[int, ...]  # indices into Catalogue.projects
    legacy_observatory: bool  # its observatory agent sends the 1.x layout
    sdk_tag: str | None  # tags its observatory agent adds to every event


@dataclass(frozen=True)
class Catalogue:
    models: tuple[ModelSpec, ...]
    tenants: tuple[TenantSpec, ...]
    projects: tuple[ProjectSpec, ...]

    @property
    def max_projects(self) -> int:
        return max(len(t.projects) for t in self.tenants)

    def model_index(self, name: str) -> int:
        return next(i for i, m in enumerate(self.models) if m.name == name)

    def tenant_index(self, tenant_id: str) -> int:
        return next(i for i, t in enumerate(self.tenants) if t.tenant_id == tenant_id)


def build_catalogue(config: GeneratorConfig) -> Catalogue:
    rng = config.rng("catalogue")
    tenants: list[TenantSpec] = []
    projects: list[ProjectSpec] = []
    for t in range(config.tenants):
        tenant_id = f"tenant-{t + 1:02d}"
        timezone, offset, regions = TIMEZONES[t % len(TIMEZONES)]
        # tenant-01 is the base tenant the rate is quoted for; others are bigger or smaller.
        size = 1.0 if t == 0 else float(np.clip(rng.lognormal(0.0, 0.3), 0.5, 1.8))
        growth = float(rng.uniform(0.2, 0.6))
        n_models = int(rng.integers(3, 5))
        models = tuple(int(m) for m in rng.choice(len(MODELS), size=n_models, replace=False))
        shares = (
            1.0,
            *sorted((round(float(s), 3) for s in rng.uniform(0.15, 0.6, n_models - 1)), reverse=True),
        )
        n_projects = int(rng.integers(3, 6))
        picked = sorted(int(p) for p in rng.choice(len(PROJECT_POOL), size=n_projects, replace=False))
        project_shares = rng.dirichlet(np.full(n_projects, 3.0))
        project_ids: list[int] = []
        for local, pool_idx in enumerate(picked):
            name, team, context = PROJECT_POOL[pool_idx]
            index = len(projects)
            # Most cost centres report in USD; a few European ones in EUR or GBP.
            currency = "EUR" if index % 7 == 3 else "GBP" if index % 11 == 5 else "USD"
            api_key = f"key_{int(rng.integers(0, 2**32)):08x}"
            projects.append(
                ProjectSpec(name, team, t, float(project_shares[local]), context, currency, api_key)
            )
            project_ids.append(index)
        legacy = config.legacy_observatory_tenant and config.tenants >= 2 and t == config.tenants - 1
        sdk_tag = None if t % 3 == 2 else f"hub-sdk-python/2.{t % 4}.{t % 3}"
        tenants.append(
            TenantSpec(
                tenant_id=tenant_id,
                timezone=timezone,
                utc_offset_minutes=offset,
                size=size,
                growth_per_year=growth,
                regions=(REGIONS.index(regions[0]), REGIONS.index(regions[1])),
                models=models,
                model_shares=shares,
                projects=tuple(project_ids),
                legacy_observatory=legacy,
                sdk_tag=sdk_tag,
            )
        )
    return Catalogue(MODELS, tuple(tenants), tuple(projects))


# -- security ------------------------------------------------------------------------------------
# (threat type, weight, description)
THREATS: tuple[tuple[str, float, str], ...] = (
    ("prompt_injection", 0.30, "Instructions in user content tried to override the system prompt"),
    ("jailbreak", 0.20, "Known jailbreak pattern in the prompt"),
    ("pii_leak", 0.18, "Personal data detected in a completion"),
    ("data_exfiltration", 0.07, "Completion echoed retrieved documents beyond the user's access"),
    ("toxic_content", 0.12, "Toxic or abusive content in the completion"),
    ("credential_exposure", 0.06, "An API key or password pattern appeared in the prompt"),
    ("model_abuse", 0.07, "Automated high-rate use outside the intended purpose"),
)
# Sentinel only reports detections at warning or above (info is noise it is not meant to send).
SECURITY_SEVERITIES: tuple[str, ...] = ("warning", "error", "critical")
SECURITY_SEVERITY_SHARES = (0.62, 0.28, 0.10)

# -- policy --------------------------------------------------------------------------------------
# (rule id, name, category, weight, failure rate)
# fmt: off
POLICIES: tuple[tuple[str, str, str, float, float], ...] = (
    ("pol-pii-redaction", "PII is redacted before prompts leave the tenant", "data_privacy", 0.25, 0.03),
    ("pol-toxicity-filter", "Completions above the toxicity threshold are blocked", "content_safety", 0.2, 0.02),
    ("pol-model-allowlist", "Only approved models serve production traffic", "model_usage", 0.15, 0.01),
    ("pol-budget-guard", "Projects stay within their monthly budget", "cost_control", 0.15, 0.04),
    ("pol-tenant-rate-limit", "Requests stay under the tenant rate limit", "rate_limit", 0.1, 0.02),
    ("pol-prompt-rbac", "Callers may only use prompts their team owns", "access_control", 0.1, 0.01),
    ("pol-eu-ai-act-logging", "High-risk uses keep EU AI Act records", "regulatory", 0.05, 0.005),
)
# fmt: on

# -- governance ----------------------------------------------------------------------------------
# (action, weight, statuses)
GOVERNANCE_ACTIONS: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("audit_log", 0.35, ("completed",)),
    ("approval", 0.2, ("approved", "approved", "approved", "rejected", "pending")),
    ("access_review", 0.15, ("completed", "completed", "pending")),
    ("model_card_update", 0.1, ("completed",)),
    ("risk_assessment", 0.08, ("completed", "pending")),
    ("data_retention", 0.08, ("completed", "failed")),
    ("incident_report", 0.04, ("pending", "completed")),
)
FRAMEWORKS: tuple[str, ...] = ("SOC2", "ISO-42001", "EU-AI-Act", "GDPR", "NIST-AI-RMF")
PEOPLE: tuple[str, ...] = (
    "amara",
    "bjorn",
    "chen",
    "dana",
    "eitan",
    "farah",
    "goran",
    "hana",
    "ivo",
    "jules",
)
