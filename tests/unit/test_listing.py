"""The bucket listing is read ahead by a thread: the pages come in order, and whatever ends the thread (an error, a
panic from the Rust client, which is a BaseException) reaches the caller where it happened, never a hang."""

from __future__ import annotations

import threading

import pytest

from include.catalog_publisher.s3_store import _read_ahead


def pages(stop_with: BaseException | None = None):
    yield from range(10)
    if stop_with is not None:
        raise stop_with


def test_every_page_comes_in_order():
    assert list(_read_ahead(pages(), depth=2)) == list(range(10))


@pytest.mark.parametrize("error", [OSError("connection reset"), KeyboardInterrupt()])
def test_whatever_ends_the_reading_thread_is_raised_to_the_caller_after_the_pages_before_it(error):
    got, raised = [], []

    def consume() -> None:
        try:
            got.extend(_read_ahead(pages(error), depth=2))
        except BaseException as exc:  # noqa: BLE001 - what reached the caller is the point
            raised.append(exc)

    caller = threading.Thread(target=consume, daemon=True)
    caller.start()
    caller.join(timeout=10)
    assert not caller.is_alive(), "the caller hangs waiting for a thread that is gone"
    assert got == list(range(10)) and raised == [error]


def test_leaving_early_stops_the_thread():
    before = threading.active_count()
    listing = _read_ahead(pages(), depth=2)
    assert next(listing) == 0
    listing.close()
    assert threading.active_count() == before
