"""The exceptions for failures a user can act on, each with a message naming the input and the fix."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar


class PublisherError(Exception):
    """A failure caused by input or configuration: retrying will not help until the user fixes it.

    Scripts print it as one line and exit non-zero; DAG tasks fail at once, without retries, so the
    message is the last line of the task log.
    """


class ServiceUnavailableError(PublisherError):
    """A service (S3, Kafka, Elasticsearch) could not be reached or did not confirm the work.

    Unlike its parent this may pass on its own, so DAG tasks let Airflow retry it with backoff.
    """


class NothingToPublish(Exception):  # noqa: N818 - a condition, not an error
    """The run has nothing to do (say, no date folder for its day): its tasks end as skipped, not failed."""


F = TypeVar("F", bound=Callable[..., Any])


def fail_fast_on_user_error(fn: F) -> F:
    """A user error fails the task at once (a retry cannot fix a bad path); service errors are retried;
    NothingToPublish skips the task and, through the trigger rules, what follows it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceUnavailableError:
            raise
        except NothingToPublish as exc:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(str(exc)) from None
        except PublisherError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(exc)) from None

    return wrapper  # type: ignore[return-value]
