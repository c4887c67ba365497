"""bench/report.py: the summary table of bench/timers.py and its plots, from rows as the cases return them."""

from __future__ import annotations

from pathlib import Path

from bench.report import Figure, cdf, markdown, num, rate_over_time, summary, write_plots


def burst_rows(p99: float = 200.0) -> list[dict]:
    return [
        {
            "case": "burst",
            "system": "minoots",
            "n": 10_000,
            "p50": 100.0,
            "p99": p99,
            "max": 300.0,
            "lost": 0,
            "double": 0,
        },
        {
            "case": "burst",
            "system": "celery eta",
            "n": 10_000,
            "p50": 2_000.0,
            "p99": 4_000.0,
            "max": 4_400.0,
            "lost": 0,
            "double": 1,
        },
    ]


def rows_of(figures: list[Figure], case: str) -> list[tuple[str, str, str, str, str]]:
    return [(f.figure, f.minoots, f.baseline, f.goal, f.met) for f in figures if f.case == case]


def test_burst_figures_beside_celery_and_the_goal() -> None:
    assert rows_of(summary(burst_rows(), ran={"burst"}), "burst") == [
        ("lateness p50 ms (10,000 same-instant timers)", "100.0", "2,000.0 (celery eta)", "—", "—"),
        ("lateness p99 ms (10,000 same-instant timers)", "200.0", "4,000.0 (celery eta)", "≤ 250 ms", "yes"),
        ("lateness max ms (10,000 same-instant timers)", "300.0", "4,400.0 (celery eta)", "—", "—"),
        ("lost / double-fired", "0 / 0", "0 / 1 (celery eta)", "0 / 0", "yes"),
    ]
    assert rows_of(summary(burst_rows(p99=251.0), ran={"burst"}), "burst")[1][-1] == "**no**"


def test_markdown_is_one_table_with_a_row_per_figure() -> None:
    table = markdown([Figure("burst", "lateness p99 ms", "200.0", "4,000.0 (celery eta)", "≤ 250 ms", "yes")])
    assert table.splitlines() == [
        "| case | figure | minoots | baseline (which) | goal | met? |",
        "| --- | --- | ---: | ---: | --- | --- |",
        "| burst | lateness p99 ms | 200.0 | 4,000.0 (celery eta) | ≤ 250 ms | yes |",
    ]
    assert "a \\| b" in markdown([Figure("c", "a | b", "1")])


def test_cases_not_chosen_say_not_run_and_unmeasured_figures_say_not_measured() -> None:
    steady = {"case": "steady (service)", "system": "minoots", "n": 12_000, "p50": 2.0, "p99": 8.0, "max": 90.0}
    figures = summary([{**steady, "lost": 0, "double": 0}], ran={"steady"})
    by_case = {f.case: f for f in figures}
    assert by_case["steady (http)"].met == "not measured"
    assert by_case["steady (http)"].minoots == "not measured (--steady-via http)"
    assert by_case["steady"].figure == "celery eta baseline"  # run with --no-baseline
    # No baseline to compare with: the p99 goal is judged on its 10 ms alone.
    assert rows_of(figures, "steady (service)")[1][-1] == "yes"
    for case in ("burst", "create (http)", "batch create", "webhook burst", "scale"):
        assert by_case[case].met == "not run", case


def test_steady_p99_must_also_be_no_worse_than_celery() -> None:
    rows = [
        {
            "case": "steady (service)",
            "system": "minoots",
            "n": 100,
            "p50": 2.0,
            "p99": 8.0,
            "max": 20.0,
            "lost": 0,
            "double": 0,
        },
        {
            "case": "steady (apply_async)",
            "system": "celery eta",
            "n": 100,
            "p50": 1.0,
            "p99": 5.0,
            "max": 9.0,
            "lost": 0,
            "double": 0,
        },
    ]
    p99 = rows_of(summary(rows, ran={"steady"}), "steady (service)")[1]
    assert p99 == (
        "lateness p99 ms (100 timers via timer_create())",
        "8.0",
        "5.0 (celery eta)",
        "≤ 10 ms and ≤ celery eta p99",
        "**no**",
    )


def test_create_ratio_and_paced_p99() -> None:
    rows = [
        {"case": "create (http)", "system": "minoots", "n": 1_500, "p50": 90.0, "p99": 400.0, "creates_per_s": 150.0},
        {
            "case": "create (http)",
            "system": "bare django+drf",
            "n": 5_000,
            "p50": 20.0,
            "p99": 100.0,
            "creates_per_s": 500.0,
        },
        {"case": "create paced 200/s", "system": "minoots", "n": 2_000, "p50": 10.0, "p99": 24.0},
    ]
    figures = rows_of(summary(rows, ran={"create"}), "create (http)")
    assert figures[0] == (
        "creates/s, 16 keep-alive clients",
        "150 (ratio 0.30)",
        "500 (bare django+drf)",
        "ratio ≥ 0.70",
        "**no**",
    )
    assert figures[-1] == ("paced 200/s response p99 ms (from the instant due)", "24.0", "—", "≤ 25 ms", "yes")


def test_webhook_and_batch_goals() -> None:
    rows = [
        {
            "case": "webhook burst",
            "system": "minoots",
            "n": 10_000,
            "p50": 900.0,
            "p99": 2_500.0,
            "max": 2_600.0,
            "lost": 0,
            "double": 2,
            "attempts_per_s": 6_000.0,
        },
        {
            "case": "batch create",
            "system": "minoots",
            "n": 100_000,
            "p50": 80.0,
            "p99": 350.0,
            "max": 400.0,
            "lost": 0,
            "double": 0,
            "timers_per_s": 3_355.0,
            "request_p99": 5_300.0,
        },
    ]
    figures = summary(rows, ran={"webhook", "batch"})
    assert rows_of(figures, "webhook burst") == [
        ("attempts/s", "6,000", "—", "≥ 5,000/s", "yes"),
        ("arrival p99 ms (10,000 same-instant webhooks)", "2,500.0", "—", "≤ 3,000 ms", "yes"),
        ("arrival max ms", "2,600.0", "—", "—", "—"),
        ("lost / repeated webhook-id deliveries", "0 / 2", "—", "0 / 0", "**no**"),
    ]
    assert rows_of(figures, "batch create")[0] == (
        "timers/s created (100,000 timers)",
        "3,355",
        "—",
        "≥ 20,000/s",
        "**no**",
    )


def test_scale_compares_with_the_smallest_count_and_lists_10_million_as_not_measured() -> None:
    rows = [
        {
            "case": "scale 1,000 pending",
            "system": "minoots",
            "n": 1_000,
            "worker_rss_mb": 300.0,
            "redis_mb": 2.0,
            "reconcile_p99": 8.0,
            "list_p99": 20.0,
            "dashboard_p99": 90.0,
            "admin_list_p99": 50.0,
        },
        {
            "case": "scale 1,000,000 pending",
            "system": "minoots",
            "n": 1_000_000,
            "worker_rss_mb": 331.0,
            "redis_mb": 2.2,
            "reconcile_p99": 4.0,
            "list_p99": 30.0,
            "dashboard_p99": 150.0,
            "admin_list_p99": 900.0,
        },
    ]
    figures = summary(rows, ran={"scale"})
    assert rows_of(figures, "scale 1,000,000 pending") == [
        ("worker RSS MB", "331.0", "300.0 (at 1,000)", "≤ +10 %", "**no**"),
        ("Redis used_memory MB", "2.2", "2.0 (at 1,000)", "≤ +10 %", "yes"),
        ("reconcile pass p99 ms", "4.00", "8.00 (at 1,000)", "≤ 20 ms", "yes"),
        ("GET /api/timers p99 ms", "30.00", "20.00 (at 1,000)", "≤ 100 ms", "yes"),
        ("admin dashboard p99 ms", "150.00", "90.00 (at 1,000)", "≤ 100 ms", "**no**"),
        ("admin timer list p99 ms", "900.00", "50.00 (at 1,000)", "≤ 100 ms", "**no**"),
    ]
    assert [f.met for f in figures if f.case == "scale 10,000,000 pending"] == ["not measured"]


def test_a_case_the_report_does_not_know_is_reported_with_its_baseline() -> None:
    rows = [
        {"case": "redelivery", "system": "minoots", "n": 5, "p50": 1.0, "p99": 2.0, "max": 3.0, "lost": 0, "double": 0},
        {"case": "redelivery", "system": "old", "n": 5, "p50": 4.0, "p99": 5.0, "max": 6.0, "lost": 1, "double": 0},
    ]
    assert rows_of(summary(rows, ran={"redelivery"}), "redelivery") == [
        ("p50 ms", "1.0", "4.0 (old)", "—", "—"),
        ("p99 ms", "2.0", "5.0 (old)", "—", "—"),
        ("max ms", "3.0", "6.0 (old)", "—", "—"),
        ("lost / double-fired", "0 / 0", "1 / 0 (old)", "0 / 0", "yes"),
    ]


def test_numbers_cdf_and_rate_over_time() -> None:
    assert [num(1234.56), num(12_000), num(float("nan")), num(""), num(0.5, 2)] == [
        "1,234.6",
        "12,000",
        "n/a",
        "n/a",
        "0.50",
    ]
    assert cdf([3.0, 1.0, 2.0, 4.0]) == ([1.0, 2.0, 3.0, 4.0], [0.25, 0.5, 0.75, 1.0])
    # Arrivals at 100.1, 100.2, 100.7 and 101.6 after a fireAt of 100, in half-second bins.
    assert rate_over_time([100.1, 100.2, 100.7, 101.6], 100.0, 0.5) == ([0.0, 0.5, 1.0, 1.5], [4.0, 2.0, 0.0, 2.0])
    assert rate_over_time([], 0.0, 1.0) == ([], [])


def test_plots_are_written_per_case(tmp_path: Path) -> None:
    rows = [
        {**burst_rows()[0], "samples": {"lateness_ms": [1.0, 2.0, 3.0], "at": [10.0, 10.5, 11.0], "t0": 10.0}},
        {**burst_rows()[1], "samples": {"lateness_ms": [5.0, 6.0]}},
        {
            "case": "webhook burst",
            "system": "minoots",
            "samples": {"lateness_ms": [100.0, 200.0], "at": [1.1, 1.2], "t0": 1.0},
        },
        {"case": "create (http)", "system": "minoots", "p99": 1.0},  # no samples: no plot
    ]
    written = write_plots(rows, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "delivery-rate-webhook.png",
        "lateness-burst.png",
        "lateness-over-time-burst.png",
        "lateness-over-time-webhook.png",
        "lateness-webhook.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
