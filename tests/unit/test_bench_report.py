"""The scheduled-runs report says when its own yardstick moved: the same peer job timed far apart within one bench
(a busy machine) is named with both times, so a reader does not take one run's ratio for a steady one."""

from __future__ import annotations

from bench import scheduled_runs


def _bench(local_s5cmd: list[float], celery_s5cmd: list[float] | None = None) -> dict:
    def part(times: list[float]) -> dict:
        return {"small": {"images": 10_000, "runs": {"s5cmd cp": [{"s": s} for s in times]}}}

    results = part(local_s5cmd)
    if celery_s5cmd is not None:
        results["celery"] = part(celery_s5cmd)
    return results


def test_a_peer_that_moved_across_the_bench_is_reported_with_both_times():
    lines = scheduled_runs._peer_pace(_bench([10.0, 10.4, 12.0], [8.2, 8.5]))
    assert "- s5cmd cp of 10,000 images: 8.20s (in the CeleryExecutor rounds) to 12.00s (in the LocalExecutor " in (
        "\n".join(lines)
    )
    assert "1.46x apart" in lines[-1]


def test_a_steady_peer_adds_nothing():
    assert scheduled_runs._peer_pace(_bench([10.0, 10.4, 10.9], [10.2])) == []
    assert scheduled_runs._peer_pace(_bench([10.0])) == []
