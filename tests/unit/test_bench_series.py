"""bench/series.py: N runs' cells combined into medians with their ranges."""

from bench.series import combined, meets, series_table


def test_each_number_of_a_cell_becomes_its_median_with_the_range():
    cells = [
        "15.4 ms / 29.1 ms; -3.8 ms",
        "16.0 ms / 27.0 ms; -2.0 ms",
        "14.0 ms / 31.0 ms; -4.0 ms",
    ]
    assert combined(cells) == ("15.4 [14.0-16.0] ms / 29.1 [27.0-31.0] ms; -3.8 [-4.0 to -2.0] ms")
    assert combined(["1,145", "1,300", "998"]) == "1,145 [998-1,300]"
    assert combined(["1000 of 1000"] * 3) == "1000 of 1000"  # the same in every run
    assert combined(["redis 5", "redis 5, db 1"]) == "redis 5 ~ redis 5, db 1"


def test_the_median_is_judged_against_the_target():
    assert meets("24.7 [20.0-60.0] ms", "<= 50 ms") == "yes"
    assert meets("51.0 [20.0-60.0] ms", "<= 50 ms") == "no"
    assert meets("1,315 [900-1,400]", ">= 1,400") == "no"
    assert meets("0.146 s", "-") == "-"
    assert meets("0.00", "0") == "yes"
    assert meets("0.02 [0.00-0.05]", "0") == "no"


def test_a_row_answered_correctly_needs_every_run():
    run = "| figure | measured | target | ok? |\n|--|--|--|--|\n"
    run += "| held waits answered correctly | {} | all | {} |\n"
    table = series_table([run.format("10 of 10", "yes"), run.format("9 of 10", "no")])
    assert table.splitlines()[-1].endswith("| all | no |")
