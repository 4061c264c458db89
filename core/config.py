"""Typed configuration, loaded once at the edge and passed down.

``load_config`` lays ``conf/base.yaml``, then ``conf/<env>.yaml``, then environment variables
``LEARNSCORE__SECTION__KEY=value`` over each other and validates the result. Secrets are not
part of the files: :class:`Secrets` reads them from the environment only.
"""

from __future__ import annotations

import os
import secrets as _secrets
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from learnscore.schemas.domain import Domain

ENV_PREFIX = "LEARNSCORE__"
MIN_API_KEY_LENGTH = 32


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and what to do."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DomainConfig(_Section):
    """What the platform's diagnostics are about (:class:`learnscore.schemas.domain.Domain`)."""

    subjects: tuple[str, ...] = Domain.subjects
    grade_min: int = Field(Domain.grade_min, ge=1)
    grade_max: int = Field(Domain.grade_max, ge=1)
    skills: tuple[str, ...] | None = None
    level_cut_scores: tuple[float, ...] = Domain.level_cut_scores

    @model_validator(mode="after")
    def _is_a_domain(self) -> DomainConfig:
        self.contract()  # raises ValueError naming the problem
        return self

    def contract(self) -> Domain:
        """The domain the contracts, features and simulator follow."""
        return Domain(subjects=tuple(self.subjects), grade_min=self.grade_min, grade_max=self.grade_max,
                      skills=None if self.skills is None else tuple(self.skills),
                      level_cut_scores=tuple(self.level_cut_scores))


class SparkConfig(_Section):
    master: str = "local[2]"
    app_name: str = "learnscore"
    driver_memory: str = "4g"
    # The driver JVM's JIT: "c1" stops at the quick compiler. The scorer compiles generated code
    # every micro-batch, and C2 kept recompiling it: 40 % of a core at 500 submissions/s
    # (streaming/README.md). "full" for long batch jobs on big data.
    driver_jit: Literal["c1", "full"] = "c1"
    shuffle_partitions: int = Field(2, ge=1)
    jars_dir: Path = Path(".cache/jars/spark")
    # Map the driver class archive `learnscore jars` builds (core/class_archive.py); false: never.
    class_archive: bool = True
    extra_conf: dict[str, str] = Field(default_factory=dict)
    # FAIR scheduler pool weights (a pool per scorer query): the scoring query's jobs go first
    # when the two cores are busy; unknown pools get weight 1.
    scheduler_pools: dict[str, int] = Field(default_factory=lambda: {"score": 4, "gold": 2, "pairs": 1,
                                                                      "land": 1, "shadow": 1})


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    ssl_cafile: Path | None = None
    topic_prefix: str = ""
    partitions: int = Field(2, ge=1)
    # Topics learnscore creates get these (a write with acks=all needs min_insync_replicas copies).
    replication_factor: int = Field(1, ge=1)
    min_insync_replicas: int = Field(1, ge=1)
    request_timeout_s: float = Field(15, gt=0)
    principals: KafkaPrincipals = Field(default_factory=lambda: KafkaPrincipals())

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> KafkaConfig:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas ({self.min_insync_replicas}) exceeds kafka.replication_factor "
                f"({self.replication_factor}): no write with acks=all could succeed; lower it")
        return self


class BrokerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=1, le=65535)
    controller_port: int = Field(9093, ge=1, le=65535)
    sasl_ssl_port: int | None = Field(None, ge=1, le=65535)
    # false: a topic exists only once learnscore (or an operator) created it; a mistyped name fails.
    auto_create_topics: bool = True
    # false: no PLAINTEXT listener at all; clients log in on sasl_ssl_port, the broker talks to
    # itself over SASL_SSL and to its KRaft controller over mutual TLS (conf/secure.yaml).
    plaintext_listener: bool = True
    # true: StandardAuthorizer, nothing allowed without an ACL; `stack up` creates one SCRAM user
    # per process (kafka.principals) with the least ACLs it needs (learnscore/stack/kafka_acls.py).
    acls: bool = False
    super_user: str = Field("learnscore-broker", min_length=1)  # the broker's own principal
    heap: str = "512m"
    jars_dir: Path = Path(".cache/jars/kafka")
    start_timeout_s: float = Field(60, gt=0)

    @model_validator(mode="after")
    def _secure_listeners_hang_together(self) -> BrokerConfig:
        if not self.plaintext_listener and not self.sasl_ssl_port:
            raise ValueError("broker.plaintext_listener is false but broker.sasl_ssl_port is not set: the "
                             "broker would have no listener for clients; set broker.sasl_ssl_port")
        if self.acls and self.plaintext_listener:
            raise ValueError("broker.acls needs every client to log in: set broker.plaintext_listener: false "
                             "(and broker.sasl_ssl_port)")
        return self


class KafkaPrincipals(_Section):
    """The SCRAM user of each process (broker.acls); passwords: $LEARNSCORE_KAFKA_PASSWORD_<ROLE>."""

    scorer: str = "learnscore-scorer"                  # the stream (learnscore stream start)
    endpoint: str = "learnscore-endpoint"              # the REST endpoint's request log
    retrain_worker: str = "learnscore-retrain-worker"  # the retrain worker, promote, the guard
    producer: str = "learnscore-producer"              # applications (and the simulator) sending events


class LakeConfig(_Section):
    root: str = "{state_dir}/lake"
    checkpoints: str = "{state_dir}/checkpoints"
    delta_checkpoint_interval: int = Field(100, ge=1)


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///{state_dir}/mlflow/mlflow.db"
    registry_uri: str | None = None
    artifact_root: str = "{state_dir}/mlflow/artifacts"
    experiment: str = "learnscore"
    model_name: str = "learnscore-diagnostic"
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(5000, ge=1, le=65535)
    # The MLflow server `stack up --mlflow-ui` starts asks for a login (MLflow's basic-auth app)
    # unless this is false; unset: in every profile but `local` (Config.mlflow_ui_login).
    ui_login: bool | None = None
    ui_admin_user: str = Field("learnscore-admin", min_length=1)

    @model_validator(mode="after")
    def _ui_on_loopback(self) -> MlflowConfig:
        # The server speaks plain HTTP: a login from another machine would cross the network in
        # clear text, so other machines reach MLflow through a server of their own behind TLS.
        if not is_loopback(self.ui_host):
            raise ValueError(
                f"mlflow.ui_host is {self.ui_host}, reachable from other machines, but the MLflow server "
                f"learnscore starts speaks plain HTTP (its login would cross the network in clear "
                f"text). Bind it to 127.0.0.1, or run MLflow behind TLS with authentication "
                f"(mlflow.tracking_uri) and browse that one")
        return self


class StreamingConfig(_Section):
    """The streaming scorer's queries (streaming/README.md says why these values)."""

    trigger_seconds: float = Field(0.0, ge=0)  # 0: the next micro-batch starts when one ends
    landing_trigger_seconds: float = Field(1.0, ge=0)  # the Delta side: fewer, larger commits
    max_offsets_per_trigger: int = Field(100_000, ge=1)
    score_max_offsets_per_trigger: int = Field(20_000, ge=1)  # keeps a catch-up's batches short
    max_records_per_task: int = Field(5_000, ge=1)  # a larger micro-batch is read by more, shorter tasks
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    alias_check_seconds: float = Field(2.0, ge=0)
    compact_after_writes: int = Field(50, ge=0)
    dedupe_horizon: str = "7 days"  # a copy delivered later than this is not recognised as one
    outcome_horizon: str = "60 days"  # predictions wait this long for their outcome to pair
    max_batch_attempts: int = Field(3, ge=1)  # then a failing micro-batch is quarantined raw
    lease_ttl_seconds: float = Field(60.0, gt=0)
    data_loss_check_seconds: float = Field(30.0, gt=0)
    stop_drain_seconds: float = Field(60.0, ge=0)  # on stop: landing what the scoring query published
    # Registry aliases scored beside production on the same micro-batches (streaming/shadow.py),
    # when they point to another version than production.
    shadow_aliases: list[str] = Field(default_factory=lambda: ["staging"])
    # The queries this process runs (streaming/job.py); the shadow query runs beside "score".
    # All in one driver by default. On a few cores, run "score" in one process and land, gold,
    # pairs in another with a higher niceness: the OS then gives the scores the CPU first, which
    # Spark's FAIR pools inside one driver cannot (streaming/README.md has the measurements).
    queries: list[Literal["score", "land", "gold", "pairs"]] = Field(
        default_factory=lambda: ["score", "land", "gold", "pairs"], min_length=1)
    niceness: int = Field(0, ge=0, le=19)  # added to this process's (and its JVM's) nice value, and its session's
    # Prometheus /metrics of `learnscore stream start` (streaming/metrics.py); 0: not served.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)

    @field_validator("shadow_aliases")
    @classmethod
    def _no_production_shadow(cls, aliases: list[str]) -> list[str]:
        if "production" in aliases:
            raise ValueError("streaming.shadow_aliases lists 'production': production is always scored; "
                             "list challenger aliases only (e.g. [staging])")
        return aliases


class PrivacyConfig(_Section):
    min_cell_learners: int = Field(10, ge=1)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("127.0.0.2"), is_loopback("0.0.0.0"), is_loopback("::")
    (True, True, False, False)
    """
    return host in LOOPBACK_HOSTS or host.startswith("127.")


class _HttpSection(_Section):
    """A section that serves HTTP with an API key: off loopback it must speak HTTPS (the key
    would cross the network in clear text), with a certificate and its key set together."""

    _name: ClassVar[str]
    _key_is: ClassVar[str]
    host: str = "127.0.0.1"
    tls_certfile: Path | None = None  # PEM certificate (chain); with tls_keyfile: HTTPS only
    tls_keyfile: Path | None = None  # PEM private key; its password: LEARNSCORE_TLS_KEY_PASSWORD

    @model_validator(mode="after")
    def _tls_off_loopback(self):
        name = self._name
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError(f"{name}.tls_certfile and {name}.tls_keyfile go together: set both or neither")
        if self.tls_certfile is None and not is_loopback(self.host):
            raise ValueError(
                f"{name}.host is {self.host}, reachable from other machines, but TLS is off: {self._key_is} "
                f"would cross the network in clear text. Set {name}.tls_certfile and {name}.tls_keyfile "
                f"(conf/cluster.yaml shows how) or bind {name}.host to 127.0.0.1")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None


class ServingConfig(_HttpSection):
    _name: ClassVar[str] = "serving"
    _key_is: ClassVar[str] = "the API key"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_batch: int = Field(100, ge=1)
    canary_fraction: float = Field(0.0, ge=0, le=1)
    alias_check_seconds: float = Field(2.0, gt=0)
    registry_timeout_s: float = Field(5.0, gt=0)
    score_batch_items: int = Field(256, ge=1)
    request_log_capacity: int = Field(100_000, ge=1)
    # Per client address (serving/ratelimit.py). Requests with the right key and requests without
    # it have separate buckets, so a flood of bad keys cannot use up a client's allowance.
    rate_limit_per_second: float = Field(500.0, ge=0)  # 0: no limit
    rate_limit_burst: int = Field(1000, ge=1)
    unauthenticated_rate_per_second: float = Field(5.0, ge=0)  # 0: no limit
    unauthenticated_burst: int = Field(20, ge=1)
    # Share of refused requests (401, 429) written to the request log; all are counted in /metrics.
    refusal_log_share: float = Field(0.01, ge=0, le=1)


class DashboardConfig(_HttpSection):
    """The dashboard (monitoring/): it asks for the endpoint's API key (a login page, or the
    X-API-Key header); off loopback it speaks HTTPS only (the key would cross the network)."""

    _name: ClassVar[str] = "dashboard"
    _key_is: ClassVar[str] = "the API key people log in with"
    port: int = Field(8050, ge=1, le=65535)
    refresh_seconds: float = Field(5, gt=0)
    window_minutes: int = Field(120, ge=1)
    bucket_seconds: int = Field(60, ge=1)


class BiConfig(_Section):
    thrift_port: int = Field(10000, ge=1, le=65535)
    thrift_host: str = "127.0.0.1"
    driver_memory: str = "1g"
    user: str = Field("bi", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")  # its password: LEARNSCORE_BI_PASSWORD


class DriftConfig(_Section):
    """River drift detectors in the stream (streaming/drift); why these values: detectors.py."""

    enabled: bool = True
    grade_bands: tuple[tuple[int, int], ...] = ((1, 4), (5, 8), (9, 12))
    delta: float = Field(1e-5, gt=0, lt=1)
    clock: int = Field(32, ge=1)
    min_segment_size: int = Field(1000, ge=10)
    min_window: int = Field(100, ge=5)
    min_effect_sigma: float = Field(0.25, ge=0)
    cooldown_seconds: float = Field(900, ge=0)



class RetrainConfig(_Section):
    """The retrain worker (batch/retrain_worker.py) and its window policy (batch/retrain_policy.py)."""

    policy: Literal["auto", "manual"] = "auto"
    consumer_group: str = "learnscore-retrain-worker"
    debounce_seconds: float = Field(30, ge=0)
    max_wait_seconds: float = Field(300, ge=0)
    history_days: float = Field(30, gt=0)
    concept_history_seconds: float = Field(0, ge=0)
    min_training_rows: int = Field(2000, ge=1)
    retry_attempts: int = Field(4, ge=1)
    retry_backoff_seconds: float = Field(2, ge=0)
    deferred_retry_seconds: float = Field(60, ge=0)
    max_deferred_attempts: int = Field(60, ge=0)
    concept_max_wait_seconds: float = Field(600, ge=0)
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: no /metrics endpoint
    failed_attempts: int = Field(3, ge=1)  # a run that fails this often is failed for good
    failed_backoff_seconds: float = Field(60, ge=0)  # before the 2nd attempt; doubles each time
    lease_ttl_seconds: float = Field(120, gt=0)  # a worker that stopped renewing loses the lease after this


class SimulatorConfig(_Section):
    seed: int = 7
    rate: float = Field(1000.0, gt=0)  # valid submissions per second for `simulate stream`
    outcome_delay_s: float = Field(10.0, ge=0)
    progress_interval_s: float = Field(5.0, gt=0)
    items_per_skill: int = Field(40, ge=1)
    min_items: int = Field(20, ge=1)
    max_items: int = Field(40, ge=1, le=200)
    history_learners: int = Field(20000, ge=1)
    history_days: float = Field(60.0, gt=0)
    history_outcome_delay_s: float = Field(604800.0, ge=0)  # outcomes arrive a week later


class BoostingParams(_Section):
    """Hyperparameters of one scikit-learn HistGradientBoosting model (names as in sklearn)."""

    max_iter: int = Field(100, ge=1)
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(15, ge=2)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(50, ge=1)
    l2_regularization: float = Field(1.0, ge=0)
    early_stopping: bool = False


class ModelConfig(_Section):
    """Training: the two boosted models, the IRT item bank, the holdout."""

    score: BoostingParams = BoostingParams()
    level: BoostingParams = BoostingParams()
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    random_state: int = 7
    irt_iterations: int = Field(15, ge=1)
    irt_min_responses: int = Field(20, ge=1)
    fit_threads: int = Field(1, ge=1)


class GatesConfig(_Section):
    """What a version must show before it may become ``production``."""

    smoke_rows: int = Field(200, ge=1)
    window_rows: int = Field(5000, ge=10)
    max_mae_increase: float = Field(0.5, ge=0)
    max_macro_f1_drop: float = Field(0.02, ge=0)
    max_mae: float = Field(10.0, gt=0)
    min_macro_f1: float = Field(0.40, ge=0, le=1)


class EstimationConfig(_Section):
    """Performance estimated before outcomes arrive (``learnscore monitor performance``, and the
    retrain worker every ``interval_seconds``)."""

    reference_rows: int = Field(20_000, ge=100)  # newest labelled rows of a version before a window
    min_reference_rows: int = Field(1000, ge=50)  # fewer: no estimate for that version and window
    min_window_rows: int = Field(200, ge=1)  # a (segment, window) cell with fewer predictions is left out
    min_labelled_rows: int = Field(100, ge=1)  # realized metrics once this many of a cell's rows have outcomes
    interval_seconds: float = Field(300, ge=0)  # the retrain worker estimates this often; 0: never
    window_seconds: int = Field(3600, ge=60)  # the windows it estimates (monitor performance --window)
    lookback_windows: int = Field(24, ge=1)  # it revisits this many complete windows for late rows and outcomes
    reference_days: float = Field(7, gt=0)  # a version's reference pairs are looked for this far before the windows


class PsychometricsConfig(_Section):
    """Rapid guessing in the stream (model/effort.py, streaming/effort.py)."""

    enabled: bool = True
    normative_share: float = Field(0.10, gt=0, lt=1)  # NT10: faster than this share of the item's typical time
    threshold_cap_ms: float = Field(10_000, gt=0)
    low_effort_share: float = Field(0.10, ge=0, lt=1)  # more rapid guesses than this share: low_effort
    # Item drift and leaked items (streaming/drift/items.py, model/item_fit.py)
    item_reference_submissions: int = Field(5000, ge=10)
    item_window_submissions: int = Field(5000, ge=10)
    item_z_limit: float = Field(5.0, gt=0)
    item_z_time_limit: float = Field(5.0, gt=0)
    item_min_responses: int = Field(50, ge=1)
    exclude_compromised_items: bool = False
    item_flags_check_seconds: float = Field(10, gt=0)


class GuardConfig(_Section):
    """The rollback guard (registry/guard.py): watches a version after its promotion."""

    policy: Literal["auto", "alert-only", "off"] = "auto"
    check_seconds: float = Field(60, gt=0)
    watch_seconds: float = Field(86_400, gt=0)
    min_labelled_rows: int = Field(300, ge=10)
    min_estimate_rows: int = Field(300, ge=10)
    max_mae_increase: float = Field(1.5, ge=0)
    max_macro_f1_drop: float = Field(0.05, ge=0)


class AlertKindConfig(_Section):
    """Overrides for one kind of alert."""

    enabled: bool = True
    dedupe_seconds: float | None = Field(None, ge=0)
    max_per_hour: int | None = Field(None, ge=0)


class AlertsConfig(_Section):
    """Alerts (core/alerts.py): the log always; a JSON webhook (Slack-compatible) when set."""

    enabled: bool = True
    webhook_url: str | None = None
    timeout_s: float = Field(5.0, gt=0)
    retry_attempts: int = Field(3, ge=1)
    retry_backoff_seconds: float = Field(1.0, ge=0)
    dedupe_seconds: float = Field(3600, ge=0)
    max_per_hour: int = Field(20, ge=0)
    queue_size: int = Field(1000, ge=1)
    # endpoint_error_rate: 5xx share of the scoring requests the endpoint owed an answer (4xx are
    # the client's and left out) over the last endpoint_error_window_seconds, once at least
    # endpoint_error_min_requests of them came (serving/error_rate.py).
    endpoint_error_rate: float = Field(0.05, ge=0, le=1)
    endpoint_error_window_seconds: float = Field(60, gt=0)
    endpoint_error_min_requests: int = Field(20, ge=1)
    # stream_lag: event → published score (median of a scoring batch), or how long submissions
    # have waited unscored for a usable version (streaming/lag.py).
    stream_lag_seconds: float = Field(120, gt=0)
    kinds: dict[str, AlertKindConfig] = Field(default_factory=dict)

    @field_validator("webhook_url")
    @classmethod
    def _no_secret_in_files(cls, value: str | None) -> str | None:
        if value and _holds_credentials(value):
            raise ValueError(f"alerts.webhook_url holds a token ({_redacted(value)}); put it in the "
                             f"environment variable {Secrets.ALERT_WEBHOOK_URL} instead of a config file")
        return value

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: dict[str, AlertKindConfig]) -> dict[str, AlertKindConfig]:
        from learnscore.core.alerts import ALERT_KINDS

        unknown = sorted(set(value) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"alerts.kinds has unknown kinds {unknown}; known: {', '.join(ALERT_KINDS)}")
        return value


def _holds_credentials(url: str) -> bool:
    """Whether a URL carries a secret: credentials, a token in the query, or a path that is itself
    the secret (Slack, Teams and Discord incoming webhooks).

    >>> _holds_credentials("http://alerts.internal:9000/learnscore")
    False
    >>> _holds_credentials("https://hooks.slack.com/services/T000/B000/XXXX")
    True
    """
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    secret_hosts = ("hooks.slack.com", "discord.com", "discordapp.com", "webhook.office.com")
    query = {key.lower() for key in parse_qs(parts.query)}
    return bool(parts.username or parts.password or (parts.hostname or "").endswith(secret_hosts)
                or query & {"token", "key", "secret", "sig", "signature", "code", "access_token"})


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/..."
class ModelsConfig(_Section):
    """Which registered versions may be loaded at all (``registry/trust.py``, docs/security.md)."""

    # pyfunc loader modules besides learnscore.model.loader that may be imported to load a
    # version. Importing a module runs its code: list only modules you have reviewed.
    allowed_loader_modules: tuple[str, ...] = ()
    # Pickle-based formats (cloudpickle'd python_model, sklearn pickle) run arbitrary code when
    # they load; they stay refused unless this is true (docs/security.md explains the risk).
    allow_pickle: bool = False
    # A version without a content hash recorded at registration (registered before learnscore
    # recorded one) loads on its structure checks alone unless this is true (conf/secure.yaml):
    # deleting the hash tag must not be a way around the content check.
    require_content_hash: bool = False


class Config(_Section):
    """The whole configuration. Paths are absolute after :func:`load_config`."""

    env: str = "local"
    state_dir: Path = Path(".state")
    domain: DomainConfig = DomainConfig()
    spark: SparkConfig = SparkConfig()
    kafka: KafkaConfig = KafkaConfig()
    broker: BrokerConfig = BrokerConfig()
    lake: LakeConfig = LakeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    streaming: StreamingConfig = StreamingConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    serving: ServingConfig = ServingConfig()
    dashboard: DashboardConfig = DashboardConfig()
    bi: BiConfig = BiConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    model: ModelConfig = ModelConfig()
    gates: GatesConfig = GatesConfig()
    estimation: EstimationConfig = EstimationConfig()
    psychometrics: PsychometricsConfig = PsychometricsConfig()
    guard: GuardConfig = GuardConfig()
    alerts: AlertsConfig = AlertsConfig()
    models: ModelsConfig = ModelsConfig()

    @model_validator(mode="after")
    def _bands_cover_grades(self) -> Config:
        bands = self.drift.grade_bands
        grades = sorted(g for low, high in bands for g in range(low, high + 1))
        wanted = list(range(self.domain.grade_min, self.domain.grade_max + 1))
        if grades != wanted:
            raise ValueError(f"drift.grade_bands must cover the grades of domain.grade_min..grade_max "
                             f"({wanted[0]}-{wanted[-1]}) once each, got {[list(b) for b in bands]}")
        return self

    @field_validator("env")
    @classmethod
    def _env_is_a_name(cls, value: str) -> str:
        if not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"env must be a plain name such as 'local', got {value!r}")
        return value

    # -- derived locations -------------------------------------------------------------------
    def table_path(self, qualified_name: str) -> str:
        """Storage location of a Delta table named ``layer.table`` (e.g. ``gold.predictions``)."""
        layer, _, table = qualified_name.partition(".")
        if not layer or not table:
            raise ConfigError(f"table name must look like 'layer.table', got {qualified_name!r}")
        return f"{self.lake.root.rstrip('/')}/{layer}/{table}"

    def checkpoint_path(self, query_name: str) -> str:
        return f"{self.lake.checkpoints.rstrip('/')}/{query_name}"

    @property
    def registry_uri(self) -> str:
        return self.mlflow.registry_uri or self.mlflow.tracking_uri

    def as_kafka_role(self, role: str) -> Config:
        """This process logs in to Kafka as the user of ``role`` in ``kafka.principals``
        (``scorer``, ``endpoint``, ``retrain_worker``, ``producer``) unless ``kafka.sasl_username``
        names one: how one secure profile serves every process, each with its own ACLs."""
        if self.kafka.sasl_username or not self.kafka.security_protocol.startswith("SASL"):
            return self
        user = getattr(self.kafka.principals, role)
        return self.model_copy(update={"kafka": self.kafka.model_copy(update={"sasl_username": user})})

    @property
    def mlflow_ui_login(self) -> bool:
        """Whether the MLflow server learnscore starts asks for a login: ``mlflow.ui_login``, by
        default in every profile but ``local``."""
        return self.env != "local" if self.mlflow.ui_login is None else self.mlflow.ui_login

    def topic(self, base_name: str) -> str:
        """The deployed name of a topic from :mod:`learnscore.schemas.topics`."""
        return f"{self.kafka.topic_prefix}{base_name}"


class Secrets:
    """Secrets from the environment only; never logged, never in config files.

    For the embedded local default a missing pseudonymisation key or API key is created once
    under ``<state_dir>/secrets`` (mode 0600) so that a fresh machine works without set-up;
    any other environment must set them.
    """

    PSEUDONYM_KEY = "LEARNSCORE_PSEUDONYM_KEY"
    API_KEY = "LEARNSCORE_API_KEY"
    KAFKA_PASSWORD = "LEARNSCORE_KAFKA_PASSWORD"
    ALERT_WEBHOOK_URL = "LEARNSCORE_ALERT_WEBHOOK_URL"
    TLS_KEY_PASSWORD = "LEARNSCORE_TLS_KEY_PASSWORD"
    BI_PASSWORD = "LEARNSCORE_BI_PASSWORD"
    MLFLOW_ADMIN_PASSWORD = "LEARNSCORE_MLFLOW_ADMIN_PASSWORD"

    def __init__(self, config: Config, environ: dict[str, str] | None = None):
        self._config = config
        self._environ = os.environ if environ is None else environ

    def _local_or_required(self, variable: str, purpose: str) -> SecretStr:
        value = self._environ.get(variable)
        if value:
            return SecretStr(value)
        if self._config.env != "local":
            raise ConfigError(
                f"{variable} is not set: it holds the {purpose}. Set it in the environment "
                f"(it is never read from conf/)."
            )
        path = self._config.state_dir / "secrets" / variable.lower()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(_secrets.token_urlsafe(32))
        return SecretStr(path.read_text().strip())

    @property
    def pseudonym_key(self) -> SecretStr:
        key = self._local_or_required(self.PSEUDONYM_KEY, "key that pseudonymises learner ids")
        if len(key.get_secret_value()) < 32:
            raise ConfigError(f"{self.PSEUDONYM_KEY} must be at least 32 characters long")
        return key

    def _long_secret(self, variable: str, purpose: str, who: str) -> SecretStr:
        """:meth:`_local_or_required`, refused when shorter than :data:`MIN_API_KEY_LENGTH` (a
        short secret can be guessed); ``who`` needs it, in the message."""
        key = self._local_or_required(variable, purpose)
        if len(key.get_secret_value()) < MIN_API_KEY_LENGTH:
            raise ConfigError(
                f"{variable} is {len(key.get_secret_value())} characters long; {who} needs at least "
                f"{MIN_API_KEY_LENGTH} (a short secret can be guessed). Generate one with: python -c "
                f"'import secrets; print(secrets.token_urlsafe(32))'")
        return key

    @property
    def api_key(self) -> SecretStr:
        return self._long_secret(self.API_KEY, "API key clients send to the REST endpoint", "the endpoint")

    @property
    def bi_password(self) -> SecretStr:
        """The password of the BI server's user (``bi.user``), for JDBC/ODBC clients."""
        return self._long_secret(self.BI_PASSWORD, "password of the BI (JDBC) server's user", "the BI server")

    @property
    def mlflow_admin_password(self) -> SecretStr:
        """The password of ``mlflow.ui_admin_user`` on the MLflow server learnscore starts."""
        return self._long_secret(self.MLFLOW_ADMIN_PASSWORD, "password of the MLflow server's admin user",
                                 "the MLflow login")

    @property
    def tls_key_password(self) -> str | None:
        """The password of ``serving.tls_keyfile`` when the key is encrypted (None: not encrypted)."""
        return self._environ.get(self.TLS_KEY_PASSWORD) or None

    @property
    def alert_webhook_url(self) -> str | None:
        """The alert webhook when its URL holds a token (else ``alerts.webhook_url`` in config)."""
        return self._environ.get(self.ALERT_WEBHOOK_URL) or None

    def _kafka_password_value(self) -> str | None:
        """``$LEARNSCORE_KAFKA_PASSWORD``; for a ``kafka.principals`` user also
        ``$LEARNSCORE_KAFKA_PASSWORD_<ROLE>``, then the password the local broker's ``stack up``
        made for it under ``<state_dir>/secrets``."""
        value = self._environ.get(self.KAFKA_PASSWORD)
        if value:
            return value
        kafka = self._config.kafka
        role = next((role for role, user in kafka.principals.model_dump().items()
                     if user == kafka.sasl_username), None)
        if role is None:
            return None
        variable = f"{self.KAFKA_PASSWORD}_{role.upper()}"
        made = self._config.state_dir / "secrets" / variable.lower()
        return self._environ.get(variable) or (made.read_text().strip() if made.is_file() else None)

    def kafka_password_required(self) -> str:
        value = self._kafka_password_value()
        if not value:
            raise ConfigError(f"{self.KAFKA_PASSWORD} is not set: it holds the SASL password of "
                              f"Kafka user {self._config.kafka.sasl_username!r}; export it")
        return value

    @property
    def kafka_password(self) -> SecretStr | None:
        value = self._kafka_password_value()
        if value:
            return SecretStr(value)
        if self._config.kafka.sasl_mechanism:
            raise ConfigError(
                f"kafka.sasl_mechanism is {self._config.kafka.sasl_mechanism} but "
                f"{self.KAFKA_PASSWORD} is not set; export the SASL password for "
                f"user {self._config.kafka.sasl_username!r}"
            )
        return None


# -- loading ---------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings at the top level")
    return data


def _profile_chain(search: list[Path], env: str, env_file: Path) -> list[dict[str, Any]]:
    """The settings of ``env`` and of the profiles it ``extends``, the farthest ancestor first.

    ``extends: secure`` in ``cluster.yaml`` lays ``secure.yaml`` under it (and whatever that one
    extends); ``base.yaml`` is always the bottom layer.
    """
    layers: list[dict[str, Any]] = []
    chain, file = [env], env_file
    while True:
        data = _read_yaml(file)
        parent = data.pop("extends", None)
        layers.append(data)
        if parent is None or parent == "base":
            return layers[::-1]
        if not isinstance(parent, str) or not parent.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{file}: extends must name one profile, such as 'secure', got {parent!r}")
        if parent in chain:
            raise ConfigError(f"profile {env!r} extends itself: {' -> '.join([*chain, parent])}; "
                              f"remove the 'extends' that closes the cycle")
        parent_file = _first_file(search, f"{parent}.yaml")
        if parent_file is None:
            raise ConfigError(f"{file} extends {parent!r}, but there is no {parent}.yaml in "
                              f"{' or '.join(str(folder) for folder in search)}; create it or fix 'extends'")
        chain.append(parent)
        file = parent_file


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS=x`` → ``{"kafka": {"bootstrap_servers": "x"}}``.

    Values are parsed as YAML scalars so that numbers and booleans keep their types.
    """
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return overrides


def _expand(value: Any, state_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{state_dir}", state_dir)
    if isinstance(value, dict):
        return {key: _expand(item, state_dir) for key, item in value.items()}
    return value


def _absolute(location: str, base: Path) -> str:
    """Relative local paths become absolute; URIs (s3a://, sqlite:///, https://) stay as they are."""
    if "://" in location:
        if location.startswith("sqlite:///") and not location.startswith("sqlite:////"):
            return "sqlite:///" + str((base / location[len("sqlite:///") :]).resolve())
        return location
    return str((base / location).resolve())


def load_config(
    env: str | None = None,
    conf_dir: Path | None = None,
    environ: dict[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Load and validate the configuration for ``env`` (default ``$LEARNSCORE_ENV`` or ``local``).

    Raises :class:`ConfigError` with the offending key and the fix when a value is invalid.
    """
    environ = dict(os.environ if environ is None else environ)
    env = env or environ.get("LEARNSCORE_ENV") or "local"
    base_dir = (base_dir or Path.cwd()).resolve()
    if conf_dir is None and environ.get("LEARNSCORE_CONF_DIR"):
        conf_dir = Path(environ["LEARNSCORE_CONF_DIR"])
    search = [conf_dir] if conf_dir is not None else [base_dir / "conf", packaged_conf_dir()]

    base_file = _first_file(search, "base.yaml")
    env_file = _first_file(search, f"{env}.yaml")
    if env_file is None:
        known = sorted({p.stem for folder in search if folder.is_dir() for p in folder.glob("*.yaml")
                        if p.stem != "base"})
        raise ConfigError(
            f"no configuration for environment {env!r}: no {env}.yaml in "
            f"{' or '.join(str(folder) for folder in search)} (known: {', '.join(known) or 'none'}); "
            f"create it or pick one of those"
        )
    data = _read_yaml(base_file) if base_file else {}
    for layer in _profile_chain(search, env, env_file):
        data = _deep_merge(data, layer)
    data = _deep_merge(data, _env_overrides(environ))
    data["env"] = env

    state_dir = Path(str(data.get("state_dir", ".state")))
    state_dir = state_dir if state_dir.is_absolute() else (base_dir / state_dir).resolve()
    data["state_dir"] = str(state_dir)
    data = {key: _expand(value, str(state_dir)) for key, value in data.items()}

    for section, key in (("lake", "root"), ("lake", "checkpoints"), ("mlflow", "artifact_root"),
                         ("mlflow", "tracking_uri"), ("mlflow", "registry_uri")):
        value = data.get(section, {}).get(key)
        if value:
            data[section][key] = _absolute(value, base_dir)
    for section, key in (("spark", "jars_dir"), ("broker", "jars_dir"), ("serving", "tls_certfile"),
                         ("serving", "tls_keyfile"), ("dashboard", "tls_certfile"), ("dashboard", "tls_keyfile")):
        location = data.get(section, {}).get(key)
        if location and not Path(location).is_absolute():
            data[section][key] = str((base_dir / location).resolve())

    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})" if err["loc"]
            else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid configuration for env {env!r} ({env_file}): {problems}. "
            f"Fix the file or the LEARNSCORE__... environment variable that sets it."
        ) from None


def packaged_conf_dir() -> Path:
    """The ``conf/`` files shipped inside the package (``learnscore.conf``)."""
    return Path(str(resources.files("learnscore.conf")))


def _first_file(folders: list[Path], name: str) -> Path | None:
    """``name`` in the first folder holding it: a project's own ``conf/`` (in the folder
    learnscore runs from) comes before the defaults shipped in the package."""
    return next((folder / name for folder in folders if (folder / name).is_file()), None)
