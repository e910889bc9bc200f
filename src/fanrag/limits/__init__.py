"""Rate limits and retries shared by the clients of remote services (HTTP embedders, LLMs, rerankers)."""

from .backoff import (
    RetryableError,
    RetryPolicy,
    parse_retry_after,
    retry_after_of,
    retry_call,
    retryable_status,
)

__all__ = ["RetryPolicy", "RetryableError", "parse_retry_after", "retry_after_of", "retry_call",
           "retryable_status"]
