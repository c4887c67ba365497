"""The report of bench/timers.py: one Markdown summary table and the PNG plots.

The cases of ``bench/timers.py`` return rows (dicts with ``case``, ``system`` and the case's
figures); a row may carry ``samples``: ``{"lateness_ms": [...], "at": [...], "t0": epoch}``
(each timer's lateness and the epoch it fired or arrived at; ``t0`` the one fireAt of a burst).
``summary`` turns the rows into one row per figure the issue names (issue 14), each beside its
goal and its baseline; a figure no case measured is listed as "not measured", a case not chosen
with ``--cases`` as "not run". Rows of a case this module does not know (a new case) get their
lateness p50 / p99 / max without a goal, so a new case needs no change here to be reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]

MET, NOT_MET, NO_GOAL = "yes", "**no**", "—"
NOT_MEASURED, NOT_RUN = "not measured", "not run"


@dataclass(frozen=True)
class Figure:
    case: str
    figure: str
    minoots: str
    baseline: str = "—"
    goal: str = "—"
    met: str = NO_GOAL


def num(value: Any, digits: int = 1) -> str:
    """``1234.56`` -> ``1,234.6``; ints with separators; NaN, None and "" -> ``n/a``."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"
    return str(value)


def _measured(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def verdict(ok: bool | None) -> str:
    """``None``: the figure or what its goal compares with was not measured."""
    return NO_GOAL if ok is None else (MET if ok else NOT_MET)


def at_most(value: Any, limit: float) -> bool | None:
    return value <= limit if _measured(value) else None


def at_least(value: Any, limit: float) -> bool | None:
    return value >= limit if _measured(value) else None


class Rows:
    """The case rows, looked up by case and system; what was looked up is "used", the rest
    is reported generically."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self.rows = list(rows)
        self.used: set[int] = set()

    def find(self, case: str | Callable[[str], bool], system: str | None = None) -> Row | None:
        for i, row in enumerate(self.rows):
            name = str(row.get("case", ""))
            if (case(name) if callable(case) else name == case) and (system is None or row.get("system") == system):
                self.used.add(i)
                return row
        return None

    def find_all(self, case: Callable[[str], bool]) -> list[Row]:
        found = []
        for i, row in enumerate(self.rows):
            if case(str(row.get("case", ""))):
                self.used.add(i)
                found.append(row)
        return found

    def unused(self) -> list[Row]:
        return [row for i, row in enumerate(self.rows) if i not in self.used]


def _with(row: Row | None, key: str, digits: int = 1) -> str:
    return NOT_MEASURED if row is None else num(row.get(key), digits)


def _baseline(row: Row | None, key: str, digits: int = 1) -> str:
    if row is None:
        return NOT_MEASURED
    return f"{num(row.get(key), digits)} ({row.get('system', '?')})"


def _counted(value: Any) -> str:
    return "n/a" if value in ("", None) else num(value)


def lost_double(case: str, row: Row, base: Row | None, *, double: str = "double-fired") -> Figure:
    lost, dup = row.get("lost"), row.get("double")
    known = [v for v in (lost, dup) if v not in ("", None)]
    ok = None if not known else all(v == 0 for v in known)
    baseline = (
        "—" if base is None else f"{_counted(base.get('lost'))} / {_counted(base.get('double'))} ({base['system']})"
    )
    return Figure(case, f"lost / {double}", f"{_counted(lost)} / {_counted(dup)}", baseline, "0 / 0", verdict(ok))


def _lateness(
    case: str,
    context: str,
    row: Row,
    base: Row | None,
    goals: dict[str, tuple[str, bool | None]],
    what: str = "lateness",
) -> list[Figure]:
    """``<what> p50 / p99 / max ms (<context>)``, beside ``base``'s."""
    out = []
    for key in ("p50", "p99", "max"):
        goal, ok = goals.get(key, ("—", None))
        out.append(
            Figure(
                case,
                f"{what} {key} ms".strip() + (f" ({context})" if context else ""),
                num(row.get(key)),
                _baseline(base, key) if base else "—",
                goal,
                verdict(ok),
            )
        )
    return out


def _not(case: str, figure: str, why: str) -> Figure:
    return Figure(case, figure, why, "—", "—", why.split(" (")[0])


def steady_figures(rows: Rows, ran: set[str]) -> list[Figure]:
    base = rows.find("steady (apply_async)")
    if "steady" not in ran and not rows.find(lambda c: c.startswith("steady (")):
        return [_not("steady", "lateness p50 / p99 / max, 200 timers/s", NOT_RUN + " (--cases steady)")]
    out: list[Figure] = []
    for via, how in (("service", "timer_create()"), ("http", "POST /api/timers")):
        case = f"steady ({via})"
        row = rows.find(case, "minoots")
        if row is None:
            hint = f" (--steady-via {via})" if "steady" in ran else " (--cases steady)"
            out.append(
                _not(case, f"lateness p50 / p99 / max via {how}", (NOT_MEASURED if "steady" in ran else NOT_RUN) + hint)
            )
            continue
        p99, mx = row.get("p99"), row.get("max")
        p99_ok = at_most(p99, 10)
        if p99_ok and base is not None and _measured(base.get("p99")):
            p99_ok = p99 <= base["p99"]
        label = f"{num(row.get('n'))} timers via {how}"
        out += _lateness(
            case,
            label,
            row,
            base,
            {"p99": ("≤ 10 ms and ≤ celery eta p99", p99_ok), "max": ("≤ 100 ms", at_most(mx, 100))},
        )
        out.append(lost_double(case, row, base))
    if base is None and out and "steady" in ran:
        out.append(_not("steady", "celery eta baseline", NOT_MEASURED + " (without --no-baseline)"))
    return out


def burst_figures(rows: Rows) -> list[Figure]:
    row, base = rows.find("burst", "minoots"), rows.find("burst", "celery eta")
    if row is None:
        return [_not("burst", "lateness p99, 10,000 same-instant timers", NOT_RUN + " (--cases burst)")]
    label = f"{num(row.get('n'))} same-instant timers"
    out = _lateness("burst", label, row, base, {"p99": ("≤ 250 ms", at_most(row.get("p99"), 250))})
    return [*out, lost_double("burst", row, base)]


def create_figures(rows: Rows) -> list[Figure]:
    row, bare = rows.find("create (http)", "minoots"), rows.find("create (http)", "bare django+drf")
    paced = rows.find(lambda c: c.startswith("create paced"), "minoots")
    if row is None:
        return [_not("create (http)", "creates/s, p99, paced 200/s p99", NOT_RUN + " (--cases create)")]
    rate, bare_rate = row.get("creates_per_s"), (bare or {}).get("creates_per_s")
    ratio = rate / bare_rate if _measured(rate) and _measured(bare_rate) and bare_rate else float("nan")
    out = [
        Figure(
            "create (http)",
            "creates/s, 16 keep-alive clients",
            f"{num(rate, 0)} (ratio {num(ratio, 2)})",
            _baseline(bare, "creates_per_s", 0),
            "ratio ≥ 0.70",
            verdict(at_least(ratio, 0.70)),
        ),
        Figure("create (http)", "response p50 ms", num(row.get("p50")), _baseline(bare, "p50")),
        Figure("create (http)", "response p99 ms", num(row.get("p99")), _baseline(bare, "p99")),
    ]
    if paced is None:
        out.append(_not("create (http)", "paced 200/s response p99 ms", NOT_MEASURED))
    else:
        rate_label = str(paced["case"]).removeprefix("create paced ")
        out.append(
            Figure(
                "create (http)",
                f"paced {rate_label} response p99 ms (from the instant due)",
                num(paced.get("p99")),
                "—",
                "≤ 25 ms",
                verdict(at_most(paced.get("p99"), 25)),
            )
        )
    return out


def batch_figures(rows: Rows) -> list[Figure]:
    row = rows.find("batch create", "minoots")
    if row is None:
        return [_not("batch create", "timers/s created", NOT_RUN + " (--cases batch)")]
    rate = row.get("timers_per_s")
    return [
        Figure(
            "batch create",
            f"timers/s created ({num(row.get('n'))} timers)",
            num(rate, 0),
            "—",
            "≥ 20,000/s",
            verdict(at_least(rate, 20_000)),
        ),
        Figure("batch create", "request p99 ms", num(row.get("request_p99"))),
        Figure("batch create", "lateness p99 ms", num(row.get("p99"))),
        lost_double("batch create", row, None),
    ]


def webhook_figures(rows: Rows) -> list[Figure]:
    row = rows.find("webhook burst", "minoots")
    if row is None:
        return [_not("webhook burst", "attempts/s, arrival p99", NOT_RUN + " (--cases webhook)")]
    rate = row.get("attempts_per_s")
    n = num(row.get("n"))
    return [
        Figure("webhook burst", "attempts/s", num(rate, 0), "—", "≥ 5,000/s", verdict(at_least(rate, 5_000))),
        Figure(
            "webhook burst",
            f"arrival p99 ms ({n} same-instant webhooks)",
            num(row.get("p99")),
            "—",
            "≤ 3,000 ms",
            verdict(at_most(row.get("p99"), 3_000)),
        ),
        Figure("webhook burst", "arrival max ms", num(row.get("max"))),
        lost_double("webhook burst", row, None, double="repeated webhook-id deliveries"),
    ]


SCALE_ISSUE_COUNTS = (1_000, 1_000_000, 10_000_000)
SCALE_LATENCIES = (
    ("reconcile_p99", "reconcile pass p99 ms", 20.0),
    ("list_p99", "GET /api/timers p99 ms", 100.0),
    ("dashboard_p99", "admin dashboard p99 ms", 100.0),
    ("admin_list_p99", "admin timer list p99 ms", 100.0),
)


def scale_figures(rows: Rows) -> list[Figure]:
    found = sorted(rows.find_all(lambda c: c.startswith("scale ")), key=lambda r: int(r["n"]))
    if not found:
        return [
            _not("scale", "memory and p99s at 1,000 / 1,000,000 / 10,000,000 pending", NOT_RUN + " (--cases scale)")
        ]
    first = found[0]
    out: list[Figure] = []
    for row in found:
        case = f"scale {num(row['n'])} pending"
        if row is not first:
            for key, label in (("worker_rss_mb", "worker RSS MB"), ("redis_mb", "Redis used_memory MB")):
                value, before = row.get(key), first.get(key)
                ok = at_most(value, first[key] * 1.10) if _measured(before) else None
                out.append(
                    Figure(case, label, num(value), f"{num(before)} (at {num(first['n'])})", "≤ +10 %", verdict(ok))
                )
        for key, label, limit in SCALE_LATENCIES:
            if key not in row:
                out.append(_not(case, label, NOT_MEASURED))
                continue
            before = "—" if row is first else f"{num(first.get(key), 2)} (at {num(first['n'])})"
            out.append(
                Figure(case, label, num(row[key], 2), before, f"≤ {limit:g} ms", verdict(at_most(row[key], limit)))
            )
    counts = {int(r["n"]) for r in found}
    for n in SCALE_ISSUE_COUNTS:
        if n not in counts:
            out.append(
                _not(
                    f"scale {num(n)} pending",
                    "memory, reconcile / list / dashboard p99",
                    NOT_MEASURED + f" (--scale-counts …,{n})",
                )
            )
    return out


def starvation_figures(rows: Rows) -> list[Figure]:
    row, base = rows.find("starvation", "minoots"), rows.find("starvation", "shared worker (old topology)")
    if row is None:
        return []
    label = f"{num(row.get('n'))} timers beside hung webhooks"
    out = _lateness("starvation", label, row, base, {"p99": ("≤ 50 ms", at_most(row.get("p99"), 50))})
    return [*out, lost_double("starvation", row, base)]


def slowclients_figures(rows: Rows) -> list[Figure]:
    out = []
    for case in ("slowclients /healthz", "slowclients create"):
        row = rows.find(case, "minoots (gevent, make run)")
        if row is None:
            continue
        base = rows.find(case, "gthread 2x8 (web before)")
        out.append(
            Figure(
                case,
                "response p99 ms",
                num(row.get("p99")),
                _baseline(base, "p99") if base else "—",
                "≤ 200 ms",
                verdict(at_most(row.get("p99"), 200)),
            )
        )
    return out


def generic_figures(rows: list[Row]) -> list[Figure]:
    """Rows of cases this module does not know: lateness p50 / p99 / max, lost / double-fired,
    MINOOTS' rows beside the first other system of the same case."""
    out: list[Figure] = []
    for row in rows:
        if row.get("system") != "minoots" and any(
            r.get("case") == row.get("case") and r.get("system") == "minoots" for r in rows
        ):
            continue  # shown as the baseline of its case's MINOOTS row
        base = next((r for r in rows if r.get("case") == row.get("case") and r is not row), None)
        case = str(row.get("case", "?"))
        system = "" if row.get("system") == "minoots" else str(row.get("system"))
        if any(k in row for k in ("p50", "p99", "max")):
            out += _lateness(case, system, row, base, {}, what="")
        if "lost" in row or "double" in row:
            out.append(lost_double(case, row, base))
    return out


def summary(rows: Iterable[Row], *, ran: Iterable[str]) -> list[Figure]:
    """One Figure per figure of issue 14, in the order of its items; ``ran``: the cases chosen."""
    chosen = set(ran)
    found = Rows(rows)
    out = steady_figures(found, chosen) + burst_figures(found) + create_figures(found) + batch_figures(found)
    out += webhook_figures(found) + scale_figures(found) + starvation_figures(found) + slowclients_figures(found)
    return out + generic_figures(found.unused())


def markdown(figures: Iterable[Figure]) -> str:
    lines = [
        "| case | figure | minoots | baseline (which) | goal | met? |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for f in figures:
        cells = (f.case, f.figure, f.minoots, f.baseline, f.goal, f.met)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------


def plot_group(case: str) -> str:
    """The plot a case's rows share: ``steady (service)`` and ``steady (apply_async)`` -> steady."""
    return case.split(" (")[0].split()[0] if case else "other"


def series(rows: Iterable[Row]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Plot group -> [(label, samples)] of every row that carries lateness samples."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for row in rows:
        samples = row.get("samples")
        if not samples or not samples.get("lateness_ms"):
            continue
        label = f"{row.get('system')}: {row.get('case')}"
        groups.setdefault(plot_group(str(row.get("case", ""))), []).append((label, samples))
    return groups


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the fraction of values at or below each."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def rate_over_time(times: list[float], t0: float, bin_s: float) -> tuple[list[float], list[float]]:
    """Events per second in bins of ``bin_s`` seconds from ``t0``: (bin starts, rates)."""
    if not times:
        return [], []
    bins = int(max(0.0, max(times) - t0) // bin_s) + 1
    counts = [0] * bins
    for t in times:
        counts[min(bins - 1, max(0, int((t - t0) // bin_s)))] += 1
    return [i * bin_s for i in range(bins)], [c / bin_s for c in counts]


def write_plots(rows: Iterable[Row], directory: Path) -> list[Path]:
    """Per plot group: lateness-<group>.png (histogram and CDF per system),
    lateness-over-time-<group>.png (each timer's lateness against when it fired, per system);
    delivery-rate-<group>.png for webhook groups (arrivals per second after fireAt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for group, members in series(rows).items():
        fig, (hist, dist) = plt.subplots(1, 2, figsize=(12, 4.5))
        for label, s in members:
            lat = s["lateness_ms"]
            hist.hist(lat, bins=60, histtype="step", linewidth=1.5, label=f"{label} (n={len(lat):,})")
            xs, ys = cdf([max(v, 0.01) for v in lat])
            dist.plot(xs, ys, label=label)
        hist.set(title=f"{group}: lateness distribution", xlabel="lateness (ms)", ylabel="timers")
        dist.set(
            title=f"{group}: lateness CDF", xlabel="lateness (ms, log)", ylabel="fraction at or below", xscale="log"
        )
        dist.axhline(0.99, color="grey", linestyle=":", linewidth=1)
        hist.legend(fontsize="small")
        dist.legend(fontsize="small")
        fig.tight_layout()
        written.append(_save(fig, directory / f"lateness-{group}.png"))

        timed = [(label, s) for label, s in members if s.get("at")]
        if timed:
            fig, axes = plt.subplots(len(timed), 1, figsize=(12, 3 * len(timed)), squeeze=False)
            for ax, (label, s) in zip(axes[:, 0], timed, strict=True):
                t0 = s.get("t0", min(s["at"]))
                ax.scatter([t - t0 for t in s["at"]], s["lateness_ms"], s=2, alpha=0.5)
                since = "fireAt" if "t0" in s else "the first"
                ax.set(
                    title=f"{label}: lateness over time", xlabel=f"fired at (s after {since})", ylabel="lateness (ms)"
                )
            fig.tight_layout()
            written.append(_save(fig, directory / f"lateness-over-time-{group}.png"))

        if "webhook" in group:
            fig, ax = plt.subplots(figsize=(12, 4))
            for label, s in timed:
                t0 = s.get("t0", min(s["at"]))
                span = max(s["at"]) - t0
                width = max(0.1, span / 100)
                xs, rates = rate_over_time(s["at"], t0, width)
                # The last bin drawn to its end, too.
                ax.step([*xs, xs[-1] + width], [*rates, rates[-1]], where="post", label=f"{label} ({width:.2g} s bins)")
            ax.set(
                title=f"{group}: delivery rate over time", xlabel="seconds after fireAt", ylabel="webhooks arrived / s"
            )
            ax.legend(fontsize="small")
            fig.tight_layout()
            written.append(_save(fig, directory / f"delivery-rate-{group}.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
