"""The costs page's figures (`/costs/`, DESIGN.md §7.5), its CSV, and the agent page's
"This month" line.

Everything here reads the roll-up table (runs.models.CostRollup: one row per agent, site day,
model and billing), never runs or spends: the page sums days × models in the database and
reads one page of agents, the same few queries at a million runs as at ten. Their work grows
with the roll-up rows in the range (agents × days × models that spent), not with runs.

Days are the site's (settings.TIME_ZONE), as the roll-ups are kept (runs.costs.day_of); a
range ends today; weeks are ISO weeks (Monday to Sunday), cut at the range's ends. A
subscription's spend is not billed per call: it is what the same tokens would cost on the API,
labelled "API-equivalent" wherever it is shown (research/wave2.md §8.1).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import F, Q, QuerySet, Sum

from agents.models import Agent
from audit.export import neutralised
from cronos_site.web.charts import Rect, Tick, nice_max
from runs.costs import API_KEY, SUBSCRIPTION, TOKEN_FIELDS, day_of, month_spend
from runs.models import CostRollup

ZERO = Decimal(0)
MICRO = Decimal("0.000001")  # the roll-ups' places: CSV costs are written with all six
# Agents in the per-agent table; the chart draws the first AGENTS_DRAWN, the rest as "others".
AGENTS_SHOWN = 50
AGENTS_DRAWN = 20
# Models with a colour of their own in the chart (static/costs.css); the rest share one.
MODEL_COLOURS = 6
API_EQUIVALENT = "API-equivalent"
UNKNOWN_MODEL = "(model not reported)"


# --- What the page was asked for ------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The first of the month `months` after (or before) `day`'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def monday_of(day: date) -> date:
    """The first day of `day`'s ISO week."""
    return day - timedelta(days=day.weekday())


@dataclass(frozen=True)
class Range:
    """A range of site days ending today: `days` of them, or the last `months` calendar
    months (this one included); its chart has a bar per `bucket`."""

    key: str
    label: str
    bucket: str  # day, week or month
    days: int = 0
    months: int = 0

    def first_day(self, today: date) -> date:
        if self.months:
            return add_months(today.replace(day=1), 1 - self.months)
        return today - timedelta(days=self.days - 1)


RANGES = {
    r.key: r
    for r in (
        Range("7d", "Last 7 days", "day", days=7),
        Range("30d", "Last 30 days", "day", days=30),
        Range("90d", "Last 90 days", "week", days=90),
        Range("12m", "Last 12 months", "month", months=12),
    )
}
DEFAULT_RANGE = "30d"
RANGE_WORDS = ", ".join(list(RANGES)[:-1]) + " or " + list(RANGES)[-1]


@dataclass(frozen=True)
class CostQuery:
    """What the costs page (and its CSV) shows, read from (and written back into) its URL."""

    range: Range
    agent: str = ""  # an agent's name, exactly ("": every agent)
    bad_range: str = ""  # a `range` the page cannot use (the default is used instead)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> CostQuery:
        raw = params.get("range", "")
        chosen = RANGES.get(raw)
        return cls(
            range=chosen or RANGES[DEFAULT_RANGE],
            # A name is at most 100 characters (Agent.name); a longer one matches none.
            agent=params.get("agent", "").strip()[:101],
            bad_range="" if chosen or not raw else raw,
        )

    @property
    def problem(self) -> str:
        """Why the page ignored the range it was given, for the person to read ("" if not)."""
        if not self.bad_range:
            return ""
        return (
            f"“{self.bad_range[:40]}” is not a range ({RANGE_WORDS}): "
            f"the {RANGES[DEFAULT_RANGE].label.lower()} are shown."
        )

    def querystring(self, **changes: str) -> str:
        values = {"range": self.range.key, "agent": self.agent, **changes}
        return urlencode({k: v for k, v in values.items() if v})


# --- Money as the page writes it --------------------------------------------------------------


def usd(value: Decimal | None, places: int = 2) -> str:
    """$1,234.57; a spend under a cent (but not nothing) as "< $0.01"."""
    if value is None:
        return "—"
    step = Decimal(1).scaleb(-places)
    if ZERO < value < step:
        return f"< ${step}"
    return f"${value.quantize(step, ROUND_HALF_UP):,}"


def decimal_text(value: Decimal | None) -> str:
    """A cost as the CSV writes it: a decimal string with six places, never an exponent."""
    return format((value or ZERO).quantize(MICRO), "f")


@dataclass
class Figures:
    """Sums over some roll-up rows. `cost` is all of it: `billed` (API key), `api_equivalent`
    (subscription) and whatever the CLI did not say how it was paid for. Of it,
    `no_effect_cost` is what the runs that did nothing spent (`no_effect_runs` of them,
    DESIGN.md §7.6), counted on the day such a run ended (runs.costs.record_no_effect)."""

    executions: int = 0
    cost: Decimal = ZERO
    billed: Decimal = ZERO
    api_equivalent: Decimal = ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    no_effect_cost: Decimal = ZERO
    no_effect_runs: int = 0

    @classmethod
    def of(cls, sums: Mapping[str, Any]) -> Figures:
        """From a row of SUMS (a NULL sum, of no rows, is nothing)."""
        return cls(
            executions=sums["executions"] or 0,
            cost=sums["cost"] or ZERO,
            billed=sums["billed"] or ZERO,
            api_equivalent=sums["api_equivalent"] or ZERO,
            **{name: sums[name] or 0 for name in TOKEN_FIELDS},
            no_effect_cost=sums["no_effect_cost"] or ZERO,
            no_effect_runs=sums["no_effect_runs"] or 0,
        )

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def minus(self, other: Figures) -> Figures:
        return Figures(
            **{
                name: getattr(self, name) - getattr(other, name)
                for name in self.__dataclass_fields__
            }
        )

    @property
    def unknown_billing(self) -> Decimal:
        return self.cost - self.billed - self.api_equivalent

    @property
    def tokens(self) -> int:
        return sum(getattr(self, name) for name in TOKEN_FIELDS)

    @property
    def per_execution(self) -> Decimal | None:
        return self.cost / self.executions if self.executions else None

    @property
    def cost_text(self) -> str:
        return usd(self.cost)

    @property
    def billed_text(self) -> str:
        return usd(self.billed)

    @property
    def api_equivalent_text(self) -> str:
        return usd(self.api_equivalent)

    @property
    def unknown_billing_text(self) -> str:
        return usd(self.unknown_billing)

    @property
    def per_execution_text(self) -> str:
        return usd(self.per_execution, 4)

    @property
    def no_effect_cost_text(self) -> str:
        return usd(self.no_effect_cost)

    @property
    def no_effect_share(self) -> str:
        """What of the spend went on runs that did nothing, as a share ("12.5 %")."""
        return _share(self.no_effect_cost, self.cost)

    @property
    def api_note(self) -> str:
        """What of the cost is API-equivalent: all of it, a part, or nothing ("")."""
        if not self.api_equivalent:
            return ""
        if self.api_equivalent == self.cost:
            return API_EQUIVALENT
        return f"of which {usd(self.api_equivalent)} {API_EQUIVALENT}"


def _sums() -> dict[str, Any]:
    """The aggregates every figure is made of (Figures.of reads them)."""
    return {
        "executions": Sum("executions"),
        "cost": Sum("cost_usd"),
        "billed": Sum("cost_usd", filter=Q(billing=API_KEY)),
        "api_equivalent": Sum("cost_usd", filter=Q(billing=SUBSCRIPTION)),
        **{name: Sum(name) for name in TOKEN_FIELDS},
        "no_effect_cost": Sum("no_effect_cost_usd"),
        "no_effect_runs": Sum("no_effect_runs"),
    }


@dataclass
class Row:
    """A line of a table: what it is about (`label`, `detail`), its figures, and its share of
    the range's spend."""

    label: str
    figures: Figures
    share: str = ""
    detail: str = ""
    name: str = ""  # an agent's name, for its links
    colour: str = ""  # a model's class in the chart


def _share(part: Decimal, whole: Decimal) -> str:
    return f"{part * 100 / whole:.1f} %" if whole else "—"


# --- The charts' geometry ---------------------------------------------------------------------

WIDTH = 960
HEIGHT = 220
LEFT = 60  # room for the dollar labels ($0.0025, $250k)
RIGHT = 20  # room for the last bar's label, centred under it
BOTTOM = 22
TOP = 8
AGENTS_WIDTH = 720  # the per-agent bars: names on the left, amounts after each bar


@dataclass
class Bucket:
    """One bar of the spend chart: a day, an ISO week or a month (cut at the range's ends)."""

    start: date
    end: date
    label: str  # under the bar
    title: str  # in its tooltip
    figures: Figures = field(default_factory=Figures)
    per_model: dict[str, Figures] = field(default_factory=dict)


@dataclass
class SpendChart:
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: float = HEIGHT - BOTTOM
    bars: list[Rect] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    empty: bool = True
    summary: str = ""

    @property
    def middle(self) -> tuple[float, float]:
        """Where the chart says it is empty."""
        return (self.left + self.width) / 2, (TOP + self.baseline) / 2


def _dollar_tick(value: float) -> str:
    """An axis label short enough for the chart's margin: $0, $0.0025, $2.5, $250, $25k,
    $2.5M, $2.5B (never an exponent)."""
    if value == 0:
        return "$0"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"${_short(value / size)}{unit}"
    if value >= 0.01:
        return f"${_short(value)}"
    return f"${value:.6f}".rstrip("0")


def _short(number: float) -> str:
    """At most three significant digits, without an exponent: 2.5, 250, 0.25."""
    text = f"{number:.3g}"
    if "e" in text:
        text = f"{number:.0f}"
    return text


def spend_chart(buckets: list[Bucket], colours: dict[str, str], unit: str) -> SpendChart:
    """Stacked bars, one a bucket: each model's spend (its colour; the API-equivalent part of
    it lighter), the models in `colours`' order from the bottom up."""
    chart = SpendChart()
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT - RIGHT) / max(len(buckets), 1)
    top = nice_max(float(max((b.figures.cost for b in buckets), default=ZERO)))
    scale = plot_h / top
    for index, bucket in enumerate(buckets):
        x = round(LEFT + slot * index + slot * 0.15, 1)
        width = round(max(slot * 0.7, 1), 1)
        y = chart.baseline
        for model, colour in colours.items():
            spent = bucket.per_model.get(model)
            if spent is None:
                continue
            name = model or UNKNOWN_MODEL
            parts = (
                (spent.cost - spent.api_equivalent, colour, ""),
                (spent.api_equivalent, f"{colour} api-equivalent", f" {API_EQUIVALENT}"),
            )
            for cost, kind, words in parts:
                if cost <= 0:
                    continue
                height = float(cost) * scale
                y -= height
                chart.bars.append(
                    Rect(
                        x,
                        round(y, 1),
                        width,
                        round(height, 1),
                        kind,
                        f"{bucket.title}, {name}: {usd(cost)}{words}",
                    )
                )
    chart.empty = not chart.bars
    chart.y_ticks = [
        Tick(round(chart.baseline - plot_h * f, 1), _dollar_tick(top * f)) for f in (0, 0.5, 1)
    ]
    # At most about eight labels, the last bar's always among them.
    step = -(-len(buckets) // 8) or 1
    chart.x_ticks = [
        Tick(round(LEFT + slot * (index + 0.5), 1), bucket.label)
        for index, bucket in enumerate(buckets)
        if (len(buckets) - 1 - index) % step == 0
    ]
    total = sum((b.figures.cost for b in buckets), ZERO)
    chart.summary = f"{usd(total)} in {len(buckets)} {unit}{'s' if len(buckets) != 1 else ''}"
    return chart


@dataclass
class AgentBar:
    label: str  # the name, shortened to fit
    title: str
    name: str  # "" for the others
    y: int  # the bar's top
    text_y: int  # its labels' baseline
    billed_width: float
    api_x: float  # where the API-equivalent part starts
    api_width: float
    amount: str
    amount_x: float


@dataclass
class AgentChart:
    width: int
    height: int
    label_x: int
    bar_x: int
    bar_height: int
    bars: list[AgentBar]


def agent_chart(rows: list[Row], others: Row | None) -> AgentChart:
    """Horizontal bars, one an agent, longest first, then the others summed."""
    label_x, bar_x, bar_room, row_h, bar_h = 196, 204, AGENTS_WIDTH - 360, 22, 14
    drawn = [*rows, *([others] if others else [])]
    longest = max((float(r.figures.cost) for r in drawn), default=0) or 1
    bars = []
    for index, row in enumerate(drawn):
        total = float(row.figures.cost) / longest * bar_room
        api = float(row.figures.api_equivalent) / longest * bar_room
        label = row.label if len(row.label) <= 28 else row.label[:27] + "…"
        note = f" ({row.figures.api_note})" if row.figures.api_note else ""
        bars.append(
            AgentBar(
                label=label,
                title=f"{row.label}: {row.figures.cost_text}{note}, {row.share} of the spend",
                name=row.name,
                y=8 + index * row_h,
                text_y=8 + index * row_h + 11,
                billed_width=round(total - api, 1),
                api_x=round(bar_x + total - api, 1),
                api_width=round(api, 1),
                amount=row.figures.cost_text,
                amount_x=round(bar_x + total + 6, 1),
            )
        )
    height = 8 + max(len(drawn), 1) * row_h + 4
    return AgentChart(AGENTS_WIDTH, height, label_x, bar_x, bar_h, bars)


# --- The report -------------------------------------------------------------------------------


@dataclass
class Report:
    query: CostQuery
    first: date
    last: date
    agent: Agent | None  # the agent asked for, if it exists
    missing_agent: bool
    totals: Figures
    buckets: list[Bucket]
    models: list[Row]
    weeks: list[Row]
    months: list[Row]
    agents: list[Row]  # the AGENTS_SHOWN that spent most
    agents_count: int  # agents with roll-ups in the range
    others: Row | None  # the agents after those, summed
    chart: SpendChart
    agents_chart: AgentChart

    @property
    def empty(self) -> bool:
        totals = self.totals
        return not totals.executions and not totals.cost and not totals.no_effect_runs


def _buckets(kind: str, first: date, last: date) -> list[Bucket]:
    buckets = []
    if kind == "day":
        day = first
        while day <= last:
            buckets.append(Bucket(day, day, f"{day:%b %d}", f"{day:%a} {day.isoformat()}"))
            day += timedelta(days=1)
    elif kind == "week":
        monday = monday_of(first)
        while monday <= last:
            start, end = max(monday, first), min(monday + timedelta(days=6), last)
            year, week, _ = monday.isocalendar()
            buckets.append(
                Bucket(start, end, f"{start:%b %d}", f"week {year}-W{week:02d} ({start} – {end})")
            )
            monday += timedelta(days=7)
    else:
        month = first.replace(day=1)
        while month <= last:
            end = min(add_months(month, 1) - timedelta(days=1), last)
            label = f"{month:%b %Y}" if month.month == 1 or month == first else f"{month:%b}"
            buckets.append(Bucket(max(month, first), end, label, f"{month:%B %Y}"))
            month = add_months(month, 1)
    return buckets


def _place(buckets: list[Bucket], day: date) -> Bucket:
    """The bucket holding `day` (buckets are in order, with no gap)."""
    low, high = 0, len(buckets) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if buckets[middle].start <= day:
            low = middle
        else:
            high = middle - 1
    return buckets[low]


def _week_rows(days: dict[date, Figures], first: date, last: date) -> list[Row]:
    rows = []
    for bucket in _buckets("week", first, last):
        figures = Figures()
        for offset in range((bucket.end - bucket.start).days + 1):
            figures.add(days.get(bucket.start + timedelta(days=offset), Figures()))
        year, week, _ = bucket.start.isocalendar()
        detail = f"{bucket.start:%b %d} – {bucket.end:%b %d}"
        rows.append(Row(f"{year}-W{week:02d}", figures, detail=detail))
    return rows


def _month_rows(days: dict[date, Figures], first: date, last: date) -> list[Row]:
    rows: dict[date, Row] = {}
    for bucket in _buckets("month", first, last):
        detail = f"{bucket.start:%b %d} – {bucket.end:%b %d}"
        rows[bucket.start.replace(day=1)] = Row(f"{bucket.start:%B %Y}", Figures(), detail=detail)
    for day, figures in days.items():
        rows[day.replace(day=1)].figures.add(figures)
    return list(rows.values())


def sum_figures(many: Iterable[Figures]) -> Figures:
    total = Figures()
    for figures in many:
        total.add(figures)
    return total


# The spend of agents deleted since, kept and shown together under this name.
DELETED_AGENTS = "(deleted agents)"


def rollups(query: CostQuery, today: date, agent: Agent | None) -> QuerySet[CostRollup]:
    """The roll-up rows of the range (of `agent`, if one was asked for)."""
    rows = CostRollup.objects.filter(day__gte=query.range.first_day(today), day__lte=today)
    return rows.filter(agent_id=agent.pk) if agent is not None else rows


def report(query: CostQuery, today: date) -> Report:
    """The figures of the costs page: five queries at most, whatever the number of rows."""
    first, last = query.range.first_day(today), today
    agent = None
    if query.agent:
        agent = Agent.objects.filter(name=query.agent).only("id", "name").first()
    missing = bool(query.agent) and agent is None
    rows = rollups(query, today, agent).order_by()
    if missing:
        rows = rows.none()

    # Days × models: the chart, the totals, and the per-model, week and month tables.
    totals = Figures()
    buckets = _buckets(query.range.bucket, first, last)
    per_model: dict[str, Figures] = {}
    per_day: dict[date, Figures] = {}
    for found in rows.values("day", "model").annotate(**_sums()):
        figures = Figures.of(found)
        totals.add(figures)
        per_model.setdefault(found["model"], Figures()).add(figures)
        per_day.setdefault(found["day"], Figures()).add(figures)
        bucket = _place(buckets, found["day"])
        bucket.figures.add(figures)
        bucket.per_model.setdefault(found["model"], Figures()).add(figures)
    ranked = sorted(per_model.items(), key=lambda item: (-item[1].cost, item[0]))
    colours = {
        model: f"model-{index}" if index < MODEL_COLOURS else "model-other"
        for index, (model, _) in enumerate(ranked)
    }
    models = [
        Row(
            model or UNKNOWN_MODEL,
            figures,
            _share(figures.cost, totals.cost),
            colour=colours[model],
        )
        for model, figures in ranked
    ]

    # The agents that spent most, and how many spent at all.
    top = list(
        rows.values("agent_id")
        .annotate(**_sums())
        .order_by(F("cost").desc(), "agent_id")[:AGENTS_SHOWN]
    )
    names = dict(
        Agent.objects.filter(pk__in=[r["agent_id"] for r in top]).values_list("pk", "name")
    )
    agents = []
    for spent in top:
        figures = Figures.of(spent)
        # An agent deleted since the first query (its roll-ups with it) has no name to link.
        # Spend of deleted agents is kept (runs.models.CostRollup.agent is SET_NULL).
        name = names.get(spent["agent_id"], "") if spent["agent_id"] else DELETED_AGENTS
        label = name or "(a deleted agent)"
        agents.append(Row(label, figures, _share(figures.cost, totals.cost), name=name))
    count = len(top)
    if count == AGENTS_SHOWN:
        count = rows.values("agent_id").distinct().count()
    others = None
    if count > len(agents):
        rest = totals.minus(sum_figures(row.figures for row in agents))
        others = Row(f"{count - len(agents)} other agents", rest, _share(rest.cost, totals.cost))
    drawn_others = others
    if len(agents) > AGENTS_DRAWN:
        rest = totals.minus(sum_figures(row.figures for row in agents[:AGENTS_DRAWN]))
        label = f"{count - AGENTS_DRAWN} other agents"
        drawn_others = Row(label, rest, _share(rest.cost, totals.cost))

    unit = query.range.bucket
    return Report(
        query=query,
        first=first,
        last=last,
        agent=agent,
        missing_agent=missing,
        totals=totals,
        buckets=buckets,
        models=models,
        weeks=_week_rows(per_day, first, last),
        months=_month_rows(per_day, first, last),
        agents=agents,
        agents_count=count,
        others=others,
        chart=spend_chart(buckets, {m: colours[m] for m, _ in ranked}, unit),
        agents_chart=agent_chart(agents[:AGENTS_DRAWN], drawn_others),
    )


# --- The CSV ----------------------------------------------------------------------------------

CSV_COLUMNS = (
    "day",
    "agent",
    "model",
    "billing",
    "cost_kind",
    "executions",
    "cost_usd",
    *TOKEN_FIELDS,
    # Of cost_usd, what the runs that ended no_effect that day spent, and how many they were.
    "no_effect_cost_usd",
    "no_effect_runs",
)
COST_KINDS = {SUBSCRIPTION: API_EQUIVALENT, API_KEY: "billed"}
CSV_BATCH = 2000
CHUNK_CHARS = 64 * 1024  # text handed to the response at once


def csv_chunks(query: CostQuery, today: date) -> Iterator[str]:
    """The range's roll-up rows (one per day × agent × model × billing) as CSV text, oldest
    day first: costs as decimal strings with six places, tokens as integers, and every cell
    that comes from a name or the CLI neutralised against formula injection (audit.export)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    agent = None
    if query.agent:
        agent = Agent.objects.filter(name=query.agent).only("id").first()
        if agent is None:
            yield buffer.getvalue()
            return
    found = (
        rollups(query, today, agent)
        .order_by("day", "agent__name", "model", "billing")
        .values_list(
            "day",
            "agent__name",
            "model",
            "billing",
            "executions",
            "cost_usd",
            *TOKEN_FIELDS,
            "no_effect_cost_usd",
            "no_effect_runs",
        )
    )
    for row in found.iterator(CSV_BATCH):
        day, name, model, billing, executions, cost, *tokens, nothing_cost, nothing_runs = row
        writer.writerow(
            [
                day.isoformat(),
                neutralised(name if name is not None else DELETED_AGENTS),
                neutralised(model),
                neutralised(billing),
                COST_KINDS.get(billing, "unknown"),
                executions,
                decimal_text(cost),
                *tokens,
                decimal_text(nothing_cost),
                nothing_runs,
            ]
        )
        if buffer.tell() >= CHUNK_CHARS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_filename(query: CostQuery, today: date) -> str:
    who = f"{query.agent}-" if query.agent else ""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in who)
    return f"cronos-costs-{safe}{query.range.key}-{today.isoformat()}.csv"


# --- The agent page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthSpend:
    """The agent page's "This month": its spend this calendar month (site days)."""

    total: Decimal
    api_equivalent: Decimal

    @property
    def text(self) -> str:
        return usd(self.total)

    @property
    def api_note(self) -> str:
        return Figures(cost=self.total, api_equivalent=self.api_equivalent).api_note


def this_month(agent: Agent, now: datetime) -> MonthSpend | None:
    """What `agent` spent this month (the site's month `now` is in), or None for an agent that
    never costs anything (a command agent with nothing spent)."""
    today = day_of(now)
    total = month_spend(agent, today)
    if not total and agent.runner != Agent.Runner.CLAUDE:
        return None
    api = ZERO
    if total:
        subscription = CostRollup.objects.filter(
            agent_id=agent.pk, day__gte=today.replace(day=1), day__lte=today, billing=SUBSCRIPTION
        )
        api = subscription.aggregate(total=Sum("cost_usd"))["total"] or ZERO
    return MonthSpend(total, api)
