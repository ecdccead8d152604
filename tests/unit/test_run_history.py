"""Durations of the tests a run's own session ran (its head start), kept for the next plan."""

from __future__ import annotations

from pathlib import Path

from dtf.run.history import HERE_FILE, durations_here, estimates_for, remember_here
from dtf.run.plan import DEFAULT_ESTIMATE_S


def test_durations_kept_by_one_run_are_read_by_the_next_and_merged_with_later_ones(tmp_path: Path) -> None:
    remember_here(tmp_path, {"a.py::t1": 0.5, "a.py::t2": 1.25})
    remember_here(tmp_path, {"a.py::t2": 2.0, "b.py::t3": 0.001})

    assert durations_here(tmp_path, ["a.py::t1", "a.py::t2", "b.py::t3", "c.py::new"]) == {
        "a.py::t1": 0.5,
        "a.py::t2": 2.0,
        "b.py::t3": 0.001,
    }


def test_an_unreadable_file_is_no_durations_and_is_replaced_by_the_next_run(tmp_path: Path) -> None:
    (tmp_path / HERE_FILE).write_text("{not json")
    assert durations_here(tmp_path, ["a.py::t1"]) == {}

    remember_here(tmp_path, {"a.py::t1": 0.25})

    assert durations_here(tmp_path, ["a.py::t1"]) == {"a.py::t1": 0.25}


def test_nothing_is_written_where_the_data_directory_is_gone(tmp_path: Path) -> None:
    remember_here(tmp_path / "removed", {"a.py::t1": 0.25})
    assert not (tmp_path / "removed").exists()


def test_tests_run_here_set_their_siblings_estimates_and_recorded_ones_win() -> None:
    rest = ["a.py::test_3", "a.py::test_4", "b.py::test_1", "c.py::test_1"]
    ran_here = {"a.py::test_1": 0.001, "a.py::test_2": 0.003, "b.py::test_0": 0.5}
    recorded = {"b.py::test_1": 2.0}

    estimates = estimates_for(rest, recorded, ran_here)

    assert list(estimates) == rest  # only the tests still to run
    assert estimates["a.py::test_3"] == estimates["a.py::test_4"] == 0.002  # their file's median
    assert estimates["b.py::test_1"] == 2.0
    # A file nothing ran from gets the suite's median, not the default guess.
    assert estimates["c.py::test_1"] != DEFAULT_ESTIMATE_S
    assert estimates_for(["c.py::test_1"], {}, {}) == {"c.py::test_1": DEFAULT_ESTIMATE_S}
