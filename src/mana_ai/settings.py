"""All configuration in one object, read from the environment.

Variable names and defaults are the original service's (SPEC §21) where it had them; everything new is
prefixed ``MANA_AI_``. Secrets are ``SecretStr`` so they never show up in a repr, a log line or an error.
``docs/configuration.md`` is generated from this module (``mana-ai config docs``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mana_ai.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=36500)
"""Longest duration accepted: a date this far back or ahead of now is still a date (100 years)."""


def parse_duration(value: Any) -> timedelta:
    """``"2h"``, ``"7d"``, ``"90m"``, ``"30s"``, ``"500ms"`` or a plain number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=float(value))
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {str(value)[:40]!r} (use e.g. 30s, 15m, 2h, 7d)")
    number, unit = match.groups()
    seconds = float(number) * _UNIT_SECONDS[(unit or "s").lower()]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError("duration too large (at most 100 years)")
    return timedelta(seconds=seconds)


_DIVISORS_OF_60 = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)


def tick_step_s(interval_s: float) -> int:
    """The interval a cron can express that is the longest not longer than ``interval_s`` (whole seconds
    dividing a minute, minutes dividing an hour, hours dividing a day): 7 s ticks every 6 s, 90 s every 60 s."""
    seconds = max(int(interval_s), 1)
    if seconds < 60:
        return max(d for d in _DIVISORS_OF_60 if d <= seconds)
    minutes = seconds // 60
    if minutes < 60:
        return 60 * max(d for d in _DIVISORS_OF_60 if d <= minutes)
    hours = min(minutes // 60, 24)
    return 3600 * max(d for d in (1, 2, 3, 4, 6, 8, 12, 24) if d <= hours)


def _env(*names: str) -> Any:
    return AliasChoices(*names)


WEAK_SERVICE_KEYS = frozenset({"", "dev-service-key", "change-me", "changeme", "secret", "password"})
MIN_SERVICE_KEY_LENGTH = 24


class Settings(BaseSettings):
    """mana-ai settings. Every field is read from the environment variable named in its alias."""

    # allow_inf_nan: "inf" passed every "> 0" check and then overflowed the timers it was handed to.
    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", populate_by_name=True, allow_inf_nan=False
    )

    # --- HTTP -----------------------------------------------------------------------------------
    port: int = Field(3067, validation_alias=_env("PORT"), ge=1, le=65535)
    """HTTP port."""
    host: str = Field("127.0.0.1", validation_alias=_env("MANA_AI_HOST"))
    """Address to bind. Use 0.0.0.0 in a container."""
    worker_metrics_port: int | None = Field(
        None, validation_alias=_env("MANA_AI_WORKER_METRICS_PORT"), ge=1, le=65535
    )
    """`mana-ai worker` only: serve Prometheus `/metrics` on this port (at MANA_AI_HOST); unset: no port.
    `serve` shows its own planning processes' counts at its HTTP port."""
    http_header_timeout_s: float = Field(10.0, validation_alias=_env("MANA_AI_HTTP_HEADER_TIMEOUT_S"), gt=0)
    """A connection whose request head is not complete this long after it started is closed (slowloris)."""
    secure_cookies: bool = Field(False, validation_alias=_env("MANA_AI_SECURE_COOKIES"))
    """Always mark the workbench's cookies Secure (behind a TLS proxy that sends no X-Forwarded-Proto)."""

    # --- database -------------------------------------------------------------------------------
    database_url: SecretStr | None = Field(None, validation_alias=_env("SYNC_DATABASE_URL"))
    """Postgres holding sync_changes and the mana_ai schema. Unset: an embedded server is started."""
    data_dir: Path | None = Field(None, validation_alias=_env("MANA_AI_DATA_DIR"))
    """Where the embedded database keeps its files (default: the platform's user data dir)."""
    db_pool_size: int = Field(10, validation_alias=_env("MANA_AI_DB_POOL_SIZE"), ge=1, le=200)
    """Connections per process."""
    db_timeout_s: float = Field(30.0, validation_alias=_env("MANA_AI_DB_TIMEOUT_S"), gt=0)
    """How long a query waits for a pooled connection before the attempt fails (e.g. database down)."""

    # --- LLM ------------------------------------------------------------------------------------
    llm_url: str = Field("http://localhost:3020", validation_alias=_env("MANA_LLM_URL"))
    """Base URL of an OpenAI-compatible server (POST {url}/v1/chat/completions)."""
    llm_model: str = Field("mana/reasoning", validation_alias=_env("MANA_LLM_MODEL"))
    """Model id sent to the LLM server."""
    llm_api_key: SecretStr | None = Field(None, validation_alias=_env("MANA_LLM_API_KEY"))
    """Credential for the LLM server; none is sent without it (set it to MANA_SERVICE_KEY's value to send
    that, as the original did)."""
    llm_auth_header: Literal["authorization", "x-api-key"] = Field(
        "authorization", validation_alias=_env("MANA_LLM_AUTH_HEADER")
    )
    """How the credential is sent: `Authorization: Bearer` or `X-API-Key`."""
    llm_timeout_s: float = Field(120.0, validation_alias=_env("MANA_LLM_TIMEOUT_S"), gt=0)
    """Timeout of one LLM request."""
    llm_max_retries: int = Field(3, validation_alias=_env("MANA_LLM_MAX_RETRIES"), ge=0, le=10)
    """Retries on connection errors, 429 and 5xx."""
    llm_max_rpm: int | None = Field(None, validation_alias=_env("MANA_LLM_MAX_RPM"), ge=1)
    """Requests per minute to the LLM, for all processes together (unset: unlimited)."""
    llm_max_tpm: int | None = Field(None, validation_alias=_env("MANA_LLM_MAX_TPM"), ge=1)
    """Tokens per minute to the LLM, for all processes together (unset: unlimited)."""
    llm_temperature: float = Field(0.3, validation_alias=_env("MANA_LLM_TEMPERATURE"), ge=0, le=2)
    """Sampling temperature of planning requests (0 for the most repeatable plans)."""
    llm_max_tokens: int = Field(1024, validation_alias=_env("MANA_LLM_MAX_TOKENS"), ge=0)
    """Sent as max_tokens with every request (caps a runaway answer); 0 sends none."""
    llm_context_tokens: int = Field(32768, validation_alias=_env("MANA_LLM_CONTEXT_TOKENS"), ge=1024)
    """The model's context window. The offered tools are cut to fit it, compaction scales with it."""
    llm_max_tools: int = Field(0, validation_alias=_env("MANA_LLM_MAX_TOOLS"), ge=0)
    """At most this many tools offered per run, the best-ranked for the mission; 0: as many as fit."""
    llm_max_argument_chars: int = Field(0, validation_alias=_env("MANA_LLM_MAX_ARGUMENT_CHARS"), ge=0)
    """Longest string tool argument, sent as maxLength in the tool schemas and checked; 0: no limit."""
    compact_max_ctx: int | None = Field(None, validation_alias=_env("MANA_AI_COMPACT_MAX_CTX"), ge=0)
    """Context-compaction ceiling in tokens (default: MANA_LLM_CONTEXT_TOKENS); 0 disables compaction."""
    policy_mode: Literal["off", "log-only", "enforce"] = Field(
        "log-only", validation_alias=_env("POLICY_MODE")
    )
    """Injection-marker checks on tool arguments: off, log-only or enforce (drop flagged calls)."""

    # --- tick and runner ------------------------------------------------------------------------
    service_key: SecretStr = Field(SecretStr("dev-service-key"), validation_alias=_env("MANA_SERVICE_KEY"))
    """Key for POST /internal/tick (header X-Service-Key) and the research backend. Off loopback it must be
    at least 24 characters and not a known default, or `serve` refuses to start."""
    tick_interval_ms: int = Field(60_000, validation_alias=_env("TICK_INTERVAL_MS"), ge=1000)
    """How often the cluster-wide tick runs. The tick is a cron, so an interval a cron cannot express runs at the
    nearest shorter one (7 s: every 6 s; 90 s: every minute)."""
    tick_enabled: bool = Field(True, validation_alias=_env("TICK_ENABLED"))
    """Anything but exactly `false` enables the periodic tick."""
    max_concurrency: int = Field(64, validation_alias=_env("MANA_AI_MAX_CONCURRENCY"), ge=1, le=4096)
    """Missions planned at once per process (`serve` shares it between its planning processes): from just after
    the claim to the end of the LLM calls. An eighth more may be claimed ahead, waiting for a slot; write-backs
    do not hold one."""
    plan_processes: int = Field(1, validation_alias=_env("MANA_AI_PLAN_PROCESSES"), ge=0, le=64)
    """Processes `serve` plans in: itself and this many minus one `mana-ai worker` processes it starts,
    restarts and stops with itself (0: one per CPU core it may use). POST /internal/tick then hands the due
    missions to all of them through the queue and answers when every one is done."""
    due_batch_limit: int = Field(5000, validation_alias=_env("MANA_AI_DUE_BATCH_LIMIT"), ge=1)
    """Due missions taken per tick or dispatch (round-robin across users, then agents; docs/scheduling.md)."""
    default_tz: str = Field("", validation_alias=_env("MANA_AI_DEFAULT_TZ"), validate_default=True)
    """Time zone of daily/weekly/cron cadences that name none and whose user has no calendar zone. Unset:
    the TZ variable, then the system's zone, UTC last (see docs/next-to-mana.md)."""
    executor: Literal["server", "webapp"] = Field("server", validation_alias=_env("MANA_AI_EXECUTOR"))
    """Who runs a reviewed step after approval: `server` (mana-ai's own executors; tools it has none for go
    to the mana app) or `webapp` (every approved step is handed to the mana app)."""
    mission_timeout: timedelta = Field(
        timedelta(minutes=10), validation_alias=_env("MANA_AI_MISSION_TIMEOUT")
    )
    """Hard limit for planning one mission; its claim lease (MANA_AI_CLAIM_LEASE) is renewed meanwhile."""
    max_consecutive_failures: int = Field(5, validation_alias=_env("MANA_AI_MAX_CONSECUTIVE_FAILURES"), ge=1)
    """A mission that fails this many times in a row pauses itself."""
    retry_backoff: timedelta = Field(timedelta(seconds=60), validation_alias=_env("MANA_AI_RETRY_BACKOFF"))
    """Wait before retrying a failed mission; doubles with each failure in a row (max 1 h)."""
    shutdown_grace_s: float = Field(30.0, validation_alias=_env("MANA_AI_SHUTDOWN_GRACE_S"), ge=0)
    """On SIGTERM, how long in-flight plans may finish."""
    claim_lease: timedelta = Field(timedelta(seconds=30), validation_alias=_env("MANA_AI_CLAIM_LEASE"))
    """How long a claimed mission stays with a worker without a heartbeat (renewed every third of it while
    planning): after a killed worker, another takes its missions over within about this time."""
    due_poll_ms: int = Field(1000, validation_alias=_env("MANA_AI_DUE_POLL_MS"), ge=0)
    """How often each worker looks for newly due missions between ticks (refresh + dispatch, cheap when idle);
    0 leaves dispatch to the periodic tick alone. Off when TICK_ENABLED=false."""
    missed_run_grace: timedelta | None = Field(None, validation_alias=_env("MANA_AI_MISSED_RUN_GRACE"))
    """A run found later than this after its due time is skipped to the next occurrence with a note (default:
    half the cadence period, at most 12 h)."""
    token_usage_retention: timedelta = Field(
        timedelta(hours=48), validation_alias=_env("MANA_AI_TOKEN_USAGE_RETENTION")
    )
    """token_usage rows older than this are pruned."""

    # --- grants, research -----------------------------------------------------------------------
    private_key_pem: SecretStr | None = Field(None, validation_alias=_env("MANA_AI_PRIVATE_KEY_PEM"))
    """PKCS#8 RSA private key (PEM text) that unwraps mission grants; unset disables grants."""
    private_key_file: Path | None = Field(None, validation_alias=_env("MANA_AI_PRIVATE_KEY_FILE"))
    """Alternative to MANA_AI_PRIVATE_KEY_PEM: path of the PEM file."""
    research_backend: Literal["mana-api", "searxng", "off"] = Field(
        "mana-api", validation_alias=_env("MANA_AI_RESEARCH_BACKEND")
    )
    """Shallow research: mana-api, searxng or off."""
    api_url: str = Field("http://localhost:3060", validation_alias=_env("MANA_API_URL"))
    """mana-api base URL (news research)."""
    research_token: SecretStr | None = Field(None, validation_alias=_env("MANA_AI_RESEARCH_TOKEN"))
    """Credential sent to the research backend."""
    research_auth_header: str = Field("Authorization", validation_alias=_env("MANA_AI_RESEARCH_AUTH_HEADER"))
    """Header carrying MANA_AI_RESEARCH_TOKEN (Authorization sends `Bearer <token>`)."""
    searxng_url: str | None = Field(None, validation_alias=_env("MANA_AI_SEARXNG_URL"))
    """SearxNG base URL for MANA_AI_RESEARCH_BACKEND=searxng."""
    research_url: str = Field("http://localhost:3068", validation_alias=_env("MANA_RESEARCH_URL"))
    """mana-research base URL (deep research)."""
    deep_research_enabled: bool = Field(False, validation_alias=_env("MANA_AI_DEEP_RESEARCH_ENABLED"))
    """Exactly `true` enables deep research."""
    deep_research_max_age: timedelta = Field(
        timedelta(hours=2), validation_alias=_env("MANA_AI_DEEP_RESEARCH_MAX_AGE")
    )
    """A deep-research job pending longer than this is abandoned."""

    # --- auth -----------------------------------------------------------------------------------
    auth_url: str | None = Field(None, validation_alias=_env("MANA_AUTH_URL"))
    """mana-auth base URL; JWKS at {url}/api/v1/auth/jwks."""
    jwt_issuer: str | None = Field(None, validation_alias=_env("JWT_ISSUER"))
    """An extra accepted token issuer, besides MANA_AUTH_URL (http://localhost:3001 when that is unset)."""
    jwt_audience: str = Field("mana", validation_alias=_env("JWT_AUDIENCE"))
    """Required token audience."""
    node_env: str | None = Field(None, validation_alias=_env("NODE_ENV"))
    """`development` allows DEV_BYPASS_AUTH and exports trace spans immediately."""
    dev_bypass_auth: bool = Field(False, validation_alias=_env("DEV_BYPASS_AUTH"))
    """With NODE_ENV=development: skip JWT checks and act as DEV_USER_ID."""
    dev_user_id: str = Field("00000000-0000-0000-0000-000000000000", validation_alias=_env("DEV_USER_ID"))
    """The user a development bypass acts as."""
    workbench_auth: Literal["local", "jwt"] | None = Field(
        None, validation_alias=_env("MANA_AI_WORKBENCH_AUTH")
    )
    """Workbench sign-in: `local` (one local user) or `jwt` (mana tokens); default jwt when MANA_AUTH_URL or
    JWT_ISSUER is set, else local."""
    local_user: str = Field("local", validation_alias=_env("MANA_AI_USER"), min_length=1)
    """The user the CLI and the local workbench act as."""
    master_key_file: Path | None = Field(None, validation_alias=_env("MANA_AI_MASTER_KEY_FILE"))
    """The local user's master key (32 raw bytes, hex or base64) for the CLI: `grants create/refresh` and
    `proposals approve` of steps that write encrypted records. `serve` never reads it (refuses to start with it
    in JWT mode)."""
    cors_origins: str = Field("", validation_alias=_env("MANA_AI_CORS_ORIGINS"))
    """Comma-separated browser origins (e.g. https://mana.how) allowed to call /api/v1/ (grant API, audit,
    runner public key) from the web app; empty allows none."""
    proposal_ttl: timedelta = Field(timedelta(days=7), validation_alias=_env("MANA_AI_PROPOSAL_TTL"))
    """Planned steps older than this expire."""

    # --- observability --------------------------------------------------------------------------
    otel_endpoint: str | None = Field(None, validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"))
    """OTLP/HTTP endpoint; unset disables tracing."""
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("MANA_AI_LOG_FORMAT"))
    """Log lines as readable text or as one JSON object per line."""
    log_level: str = Field("INFO", validation_alias=_env("MANA_AI_LOG_LEVEL"))
    """DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case; anything else is refused at start."""
    log_payloads: bool = Field(False, validation_alias=_env("MANA_AI_LOG_PAYLOADS"))
    """Log prompts and tool arguments (never on by default)."""

    @field_validator("workbench_auth", mode="before")
    @classmethod
    def _workbench_auth(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return lowered or None
        return value

    @field_validator("policy_mode", mode="before")
    @classmethod
    def _policy_mode(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in ("off", "log-only", "enforce"):
                raise ValueError(f'POLICY_MODE must be off|log-only|enforce, got "{value[:40]}"')
            return lowered
        return value

    @field_validator("default_tz", mode="before")
    @classmethod
    def _default_tz(cls, value: Any) -> Any:
        import os

        from mana_ai.scheduler.zones import deployment_zone, known_zone

        if value is None or not str(value).strip():
            return deployment_zone(os.environ)
        zone = known_zone(value)
        if zone is None:
            raise ValueError("must be an IANA time zone such as Europe/Berlin")
        return zone

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        level = str(value).strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("tick_enabled", mode="before")
    @classmethod
    def _tick_enabled(cls, value: Any) -> Any:
        return value if isinstance(value, bool) else str(value) != "false"

    @field_validator("deep_research_enabled", "dev_bypass_auth", "log_payloads", mode="before")
    @classmethod
    def _exactly_true(cls, value: Any) -> Any:
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"

    @field_validator(
        "mission_timeout",
        "retry_backoff",
        "claim_lease",
        "token_usage_retention",
        "deep_research_max_age",
        "proposal_ttl",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("missed_run_grace", mode="before")
    @classmethod
    def _optional_duration(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse_duration(value)

    @field_validator("data_dir", "private_key_file", "master_key_file", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> Any:
        # Path("") is Path("."): an empty MANA_AI_DATA_DIR= put the embedded database into the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("llm_max_rpm", "llm_max_tpm", "worker_metrics_port", mode="before")
    @classmethod
    def _optional_int(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("claim_lease")
    @classmethod
    def _lease(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=3):
            raise ValueError("must be at least 3s (it is renewed every third of it)")
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        # Never echo the URL in an error: it usually carries a password.
        problem = "must look like postgresql://user:password@host:5432/dbname"
        if "://" in text:
            parts = urlsplit(text)
            if parts.scheme not in ("postgres", "postgresql") or not (
                parts.hostname or "host=" in parts.query
            ):
                raise ValueError(problem)
        from psycopg.conninfo import conninfo_to_dict

        try:  # libpq's parse errors quote the offending part, e.g. a badly percent-encoded password
            conninfo_to_dict(text)
        except Exception:
            raise ValueError(problem) from None
        return value

    @field_validator("llm_url", "api_url", "research_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Never echo the value: a URL may carry credentials (http://user:token@host).
            raise ValueError("must be an http(s) URL (the value is not shown: it may hold credentials)")
        return value.rstrip("/")

    # --- derived --------------------------------------------------------------------------------
    @property
    def llm_credential(self) -> str | None:
        """MANA_LLM_API_KEY only: the service key opens /internal/tick and never goes to a third party."""
        return self.llm_api_key.get_secret_value() if self.llm_api_key else None

    def service_key_problem(self) -> str | None:
        """Why MANA_SERVICE_KEY is too weak for a non-loopback bind, or ``None``."""
        key = self.service_key.get_secret_value()
        if key.strip().lower() in WEAK_SERVICE_KEYS:
            return "MANA_SERVICE_KEY is a well-known default"
        if len(key) < MIN_SERVICE_KEY_LENGTH:
            return f"MANA_SERVICE_KEY is shorter than {MIN_SERVICE_KEY_LENGTH} characters"
        return None

    @property
    def compaction_ceiling(self) -> int:
        """Tokens at which the planner compacts its history; 0 means never."""
        return self.llm_context_tokens if self.compact_max_ctx is None else self.compact_max_ctx

    @property
    def tick_interval_s(self) -> float:
        return self.tick_interval_ms / 1000

    @property
    def tick_every_s(self) -> int:
        """What the tick's cron actually runs at (:func:`tick_step_s`)."""
        return tick_step_s(self.tick_interval_s)

    def cors_origin_list(self) -> list[str]:
        """The origins of ``MANA_AI_CORS_ORIGINS`` (trimmed, without trailing slashes)."""
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    def private_key_text(self) -> str | None:
        if self.private_key_pem is not None and self.private_key_pem.get_secret_value().strip():
            return self.private_key_pem.get_secret_value()
        if self.private_key_file is not None:
            try:
                return self.private_key_file.read_text()
            except OSError as exc:
                raise ConfigError(f"MANA_AI_PRIVATE_KEY_FILE cannot be read: {exc.strerror}") from None
        return None


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; bad values end in one ConfigError naming the variables (never their values)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error.get("loc") or ("?",)
            field = str(loc[0])
            info = Settings.model_fields.get(field)
            env = _env_name(info) if info is not None else field
            problems.append(f"{env}: {error.get('msg', 'invalid')}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def _env_name(info: Any) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias)


def env_name(field: str) -> str:
    """The environment variable behind a settings field."""
    return _env_name(Settings.model_fields[field])
