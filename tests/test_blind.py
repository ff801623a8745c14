"""The arithmetic of blind windows: what the sender's retries cover and what they do not."""

from __future__ import annotations

from gme_recwatch.blind import Window, after_all_down, after_outage, after_restart

T = 1_700_000_000.0


def test_clean_restart_within_the_retry_horizon_has_no_window() -> None:
    assert after_restart(T, True, T + 59, retry=60) is None
    assert after_restart(T, True, T + 60, retry=60) is None


def test_clean_restart_beyond_the_retry_horizon_is_blind_for_the_rest_only() -> None:
    w = after_restart(T, True, T + 100, retry=60)
    assert w == Window(T + 60, T + 100, "restart_after_clean_stop")
    assert w.seconds == 40


def test_crash_is_blind_from_the_last_snapshot_however_short() -> None:
    w = after_restart(T, False, T + 5, retry=60)
    assert w == Window(T, T + 5, "restart_after_crash")
    assert w.seconds == 5


def test_crash_with_a_clock_that_went_back_has_no_window() -> None:
    assert after_restart(T, False, T - 1, retry=60) is None


def test_outage_shorter_than_the_retry_horizon_has_no_window() -> None:
    assert after_outage(T, T + 30, retry=60) is None


def test_outage_is_blind_beyond_the_retry_horizon() -> None:
    assert after_outage(T, T + 90, retry=60) == Window(T + 60, T + 90, "store_unreachable")


def test_a_start_while_another_replica_beats_has_no_window() -> None:
    assert after_all_down(T, None, T + 9, retry=60, period=5) is None


def test_a_start_after_every_replica_died_is_blind_beyond_the_retry_horizon() -> None:
    assert after_all_down(T, None, T + 100, retry=60, period=5) == Window(T + 60, T + 100, "all_replicas_down")
    assert after_all_down(T, None, T + 50, retry=60, period=5) is None


def test_a_start_after_the_last_replica_stopped_cleanly_counts_from_its_stop() -> None:
    assert after_all_down(None, T, T + 30, retry=60, period=5) is None
    assert after_all_down(T - 500, T, T + 90, retry=60, period=5) == Window(T + 60, T + 90, "all_replicas_down")


def test_the_very_first_start_has_no_window() -> None:
    assert after_all_down(None, None, T, retry=60, period=5) is None
