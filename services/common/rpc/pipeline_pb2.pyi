from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Payment(_message.Message):
    __slots__ = ("correlation_id", "amount_cents", "check", "attempts")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    amount_cents: int
    check: _containers.RepeatedScalarFieldContainer[str]
    attempts: int
    def __init__(self, correlation_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., check: _Optional[_Iterable[str]] = ..., attempts: _Optional[int] = ...) -> None: ...

class SubmitBatch(_message.Message):
    __slots__ = ("seq", "payments")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    def __init__(self, seq: _Optional[int] = ..., payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ...) -> None: ...

class SubmitAck(_message.Message):
    __slots__ = ("seq", "accepted", "duplicates", "backlog")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    seq: int
    accepted: int
    duplicates: int
    backlog: int
    def __init__(self, seq: _Optional[int] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., backlog: _Optional[int] = ...) -> None: ...

class DequeueRequest(_message.Message):
    __slots__ = ("max", "wait_ms", "consumer")
    MAX_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    max: int
    wait_ms: int
    consumer: str
    def __init__(self, max: _Optional[int] = ..., wait_ms: _Optional[int] = ..., consumer: _Optional[str] = ...) -> None: ...

class DequeueReply(_message.Message):
    __slots__ = ("payments",)
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("correlation_id", "processor", "amount_cents", "requested_at_ms")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    processor: str
    amount_cents: int
    requested_at_ms: int
    def __init__(self, correlation_id: _Optional[str] = ..., processor: _Optional[str] = ..., amount_cents: _Optional[int] = ..., requested_at_ms: _Optional[int] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("completions",)
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    def __init__(self, completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ...) -> None: ...

class CompleteReply(_message.Message):
    __slots__ = ("recorded", "ignored")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    ignored: int
    def __init__(self, recorded: _Optional[int] = ..., ignored: _Optional[int] = ...) -> None: ...

class Retry(_message.Message):
    __slots__ = ("payment", "delay_ms")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    delay_ms: int
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class RequeueRequest(_message.Message):
    __slots__ = ("retries",)
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    retries: _containers.RepeatedCompositeFieldContainer[Retry]
    def __init__(self, retries: _Optional[_Iterable[_Union[Retry, _Mapping]]] = ...) -> None: ...

class RequeueReply(_message.Message):
    __slots__ = ("requeued",)
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    requeued: int
    def __init__(self, requeued: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("correlation_id", "processor", "reason", "lease")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    processor: str
    reason: str
    lease: int
    def __init__(self, correlation_id: _Optional[str] = ..., processor: _Optional[str] = ..., reason: _Optional[str] = ..., lease: _Optional[int] = ...) -> None: ...

class RejectRequest(_message.Message):
    __slots__ = ("rejections",)
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class RejectReply(_message.Message):
    __slots__ = ("rejected",)
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    rejected: int
    def __init__(self, rejected: _Optional[int] = ...) -> None: ...

class ReviveRequest(_message.Message):
    __slots__ = ("correlation_id",)
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    def __init__(self, correlation_id: _Optional[str] = ...) -> None: ...

class ReviveReply(_message.Message):
    __slots__ = ("revived", "state")
    REVIVED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    revived: bool
    state: str
    def __init__(self, revived: _Optional[bool] = ..., state: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("consumer", "ttl_ms", "settle_ms", "stats", "leaving")
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    SETTLE_MS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    consumer: str
    ttl_ms: int
    settle_ms: int
    stats: ConsumerStats
    leaving: bool
    def __init__(self, consumer: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., settle_ms: _Optional[int] = ..., stats: _Optional[_Union[ConsumerStats, _Mapping]] = ..., leaving: _Optional[bool] = ...) -> None: ...

class PollerLease(_message.Message):
    __slots__ = ("processor", "token")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    processor: str
    token: int
    def __init__(self, processor: _Optional[str] = ..., token: _Optional[int] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("leads", "health")
    LEADS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    leads: _containers.RepeatedCompositeFieldContainer[PollerLease]
    health: _containers.RepeatedCompositeFieldContainer[ProcessorHealth]
    def __init__(self, leads: _Optional[_Iterable[_Union[PollerLease, _Mapping]]] = ..., health: _Optional[_Iterable[_Union[ProcessorHealth, _Mapping]]] = ...) -> None: ...

class PollClaim(_message.Message):
    __slots__ = ("processor", "token", "interval_ms")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    processor: str
    token: int
    interval_ms: int
    def __init__(self, processor: _Optional[str] = ..., token: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class PollGrant(_message.Message):
    __slots__ = ("wait_ms",)
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    wait_ms: int
    def __init__(self, wait_ms: _Optional[int] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("processor", "token", "answered", "failing", "min_response_time_ms", "retry_after_ms")
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    MIN_RESPONSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    processor: str
    token: int
    answered: bool
    failing: bool
    min_response_time_ms: int
    retry_after_ms: int
    def __init__(self, processor: _Optional[str] = ..., token: _Optional[int] = ..., answered: _Optional[bool] = ..., failing: _Optional[bool] = ..., min_response_time_ms: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class HealthAck(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class SummaryRequest(_message.Message):
    __slots__ = ("from_us", "to_us")
    FROM_US_FIELD_NUMBER: _ClassVar[int]
    TO_US_FIELD_NUMBER: _ClassVar[int]
    from_us: int
    to_us: int
    def __init__(self, from_us: _Optional[int] = ..., to_us: _Optional[int] = ...) -> None: ...

class ProcessorTotals(_message.Message):
    __slots__ = ("total_requests", "total_amount_cents")
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    total_requests: int
    total_amount_cents: int
    def __init__(self, total_requests: _Optional[int] = ..., total_amount_cents: _Optional[int] = ...) -> None: ...

class SummaryReply(_message.Message):
    __slots__ = ("default", "fallback")
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    default: ProcessorTotals
    fallback: ProcessorTotals
    def __init__(self, default: _Optional[_Union[ProcessorTotals, _Mapping]] = ..., fallback: _Optional[_Union[ProcessorTotals, _Mapping]] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeReply(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("correlation_id",)
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    def __init__(self, correlation_id: _Optional[str] = ...) -> None: ...

class LookupReply(_message.Message):
    __slots__ = ("state", "processor", "requested_at_ms", "amount_cents", "attempts", "reason", "retention_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MS_FIELD_NUMBER: _ClassVar[int]
    state: str
    processor: str
    requested_at_ms: int
    amount_cents: int
    attempts: int
    reason: str
    retention_ms: int
    def __init__(self, state: _Optional[str] = ..., processor: _Optional[str] = ..., requested_at_ms: _Optional[int] = ..., amount_cents: _Optional[int] = ..., attempts: _Optional[int] = ..., reason: _Optional[str] = ..., retention_ms: _Optional[int] = ...) -> None: ...

class ProcessorHealth(_message.Message):
    __slots__ = ("name", "failing", "min_response_time_ms", "checked_at_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    MIN_RESPONSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    failing: bool
    min_response_time_ms: int
    checked_at_ms: int
    def __init__(self, name: _Optional[str] = ..., failing: _Optional[bool] = ..., min_response_time_ms: _Optional[int] = ..., checked_at_ms: _Optional[int] = ...) -> None: ...

class ConsumerStats(_message.Message):
    __slots__ = ("jobs_running", "jobs_done", "jobs_failed", "jobs_timed_out", "pool_size", "retries", "unknown_outcomes", "unknown_settled", "health", "routing", "published_at_ms", "instance", "rejected", "unknown_found", "calls")
    JOBS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    JOBS_DONE_FIELD_NUMBER: _ClassVar[int]
    JOBS_FAILED_FIELD_NUMBER: _ClassVar[int]
    JOBS_TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_SETTLED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FOUND_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    jobs_running: int
    jobs_done: int
    jobs_failed: int
    jobs_timed_out: int
    pool_size: int
    retries: int
    unknown_outcomes: int
    unknown_settled: int
    health: _containers.RepeatedCompositeFieldContainer[ProcessorHealth]
    routing: str
    published_at_ms: int
    instance: str
    rejected: int
    unknown_found: int
    calls: _containers.RepeatedCompositeFieldContainer[ProcessorCalls]
    def __init__(self, jobs_running: _Optional[int] = ..., jobs_done: _Optional[int] = ..., jobs_failed: _Optional[int] = ..., jobs_timed_out: _Optional[int] = ..., pool_size: _Optional[int] = ..., retries: _Optional[int] = ..., unknown_outcomes: _Optional[int] = ..., unknown_settled: _Optional[int] = ..., health: _Optional[_Iterable[_Union[ProcessorHealth, _Mapping]]] = ..., routing: _Optional[str] = ..., published_at_ms: _Optional[int] = ..., instance: _Optional[str] = ..., rejected: _Optional[int] = ..., unknown_found: _Optional[int] = ..., calls: _Optional[_Iterable[_Union[ProcessorCalls, _Mapping]]] = ...) -> None: ...

class Histogram(_message.Message):
    __slots__ = ("counts", "sum")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum: float
    def __init__(self, counts: _Optional[_Iterable[int]] = ..., sum: _Optional[float] = ...) -> None: ...

class ProcessorCalls(_message.Message):
    __slots__ = ("processor", "outcomes", "seconds")
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    processor: str
    outcomes: _containers.ScalarMap[str, int]
    seconds: Histogram
    def __init__(self, processor: _Optional[str] = ..., outcomes: _Optional[_Mapping[str, int]] = ..., seconds: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...

class ApiStats(_message.Message):
    __slots__ = ("instance", "answers", "seconds", "spool_pending", "spool_bytes", "cache_backlog", "backlog_limit", "cache_connected", "published_at_ms")
    class AnswersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_PENDING_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_BACKLOG_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CACHE_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    instance: str
    answers: _containers.ScalarMap[int, int]
    seconds: Histogram
    spool_pending: int
    spool_bytes: int
    cache_backlog: int
    backlog_limit: int
    cache_connected: bool
    published_at_ms: int
    def __init__(self, instance: _Optional[str] = ..., answers: _Optional[_Mapping[int, int]] = ..., seconds: _Optional[_Union[Histogram, _Mapping]] = ..., spool_pending: _Optional[int] = ..., spool_bytes: _Optional[int] = ..., cache_backlog: _Optional[int] = ..., backlog_limit: _Optional[int] = ..., cache_connected: _Optional[bool] = ..., published_at_ms: _Optional[int] = ...) -> None: ...

class ApiReportAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("journal", "journal_bytes", "fsync_seconds")
    JOURNAL_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FSYNC_SECONDS_FIELD_NUMBER: _ClassVar[int]
    journal: bool
    journal_bytes: int
    fsync_seconds: Histogram
    def __init__(self, journal: _Optional[bool] = ..., journal_bytes: _Optional[int] = ..., fsync_seconds: _Optional[_Union[Histogram, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("queued", "delayed", "in_flight", "default", "fallback", "requeued", "duplicates", "consumer", "stale_requeues", "late_completions", "consumers", "per_consumer", "rejected", "retention_ms", "expired_duplicates", "apis", "cache")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    STALE_REQUEUES_FIELD_NUMBER: _ClassVar[int]
    LATE_COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    PER_CONSUMER_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    RETENTION_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    APIS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    queued: int
    delayed: int
    in_flight: int
    default: ProcessorTotals
    fallback: ProcessorTotals
    requeued: int
    duplicates: int
    consumer: ConsumerStats
    stale_requeues: int
    late_completions: int
    consumers: int
    per_consumer: _containers.RepeatedCompositeFieldContainer[ConsumerStats]
    rejected: int
    retention_ms: int
    expired_duplicates: int
    apis: _containers.RepeatedCompositeFieldContainer[ApiStats]
    cache: CacheStats
    def __init__(self, queued: _Optional[int] = ..., delayed: _Optional[int] = ..., in_flight: _Optional[int] = ..., default: _Optional[_Union[ProcessorTotals, _Mapping]] = ..., fallback: _Optional[_Union[ProcessorTotals, _Mapping]] = ..., requeued: _Optional[int] = ..., duplicates: _Optional[int] = ..., consumer: _Optional[_Union[ConsumerStats, _Mapping]] = ..., stale_requeues: _Optional[int] = ..., late_completions: _Optional[int] = ..., consumers: _Optional[int] = ..., per_consumer: _Optional[_Iterable[_Union[ConsumerStats, _Mapping]]] = ..., rejected: _Optional[int] = ..., retention_ms: _Optional[int] = ..., expired_duplicates: _Optional[int] = ..., apis: _Optional[_Iterable[_Union[ApiStats, _Mapping]]] = ..., cache: _Optional[_Union[CacheStats, _Mapping]] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetricsReply(_message.Message):
    __slots__ = ("exposition",)
    EXPOSITION_FIELD_NUMBER: _ClassVar[int]
    exposition: bytes
    def __init__(self, exposition: _Optional[bytes] = ...) -> None: ...
