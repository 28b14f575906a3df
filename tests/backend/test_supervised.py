"""The crash-loop counter behind state `failed`: same exits in a row, numbers ignored."""

from __future__ import annotations

from backend.services.supervised import SAME_EXIT_LIMIT, ExitStreak


def test_same_exits_count_up_whatever_the_ports_and_pids():
    streak = ExitStreak()
    reasons = [f"LiteLLM exited with code 1: Uvicorn on port {port} | pid {pid}: FileNotFoundError"
               for port, pid in ((4000, 11), (41234, 12), (39001, 13))]
    assert [streak.add(r) for r in reasons] == [1, 2, SAME_EXIT_LIMIT]


def test_a_different_exit_starts_a_new_streak_and_reset_clears_it():
    streak = ExitStreak()
    streak.add("LiteLLM exited with code 1: ImportError")
    streak.add("LiteLLM exited with code 1: ImportError")
    assert streak.add("LiteLLM exited with code -9: killed") == 1
    assert streak.add("LiteLLM exited with code -9: killed") == 2
    assert streak.add("LiteLLM exited with code -15: killed") == 1  # the exit code is part of the cause
    streak.reset()
    assert streak.add("LiteLLM exited with code -9: killed") == 1
