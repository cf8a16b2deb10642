"""The HTML report: one self-contained page of pictures from the published snapshot.

Everything is read from the read-only snapshot (never the working warehouse) and aggregated in
DuckDB, so the page embeds a few hundred points whatever the number of customers. Each picture
is a :class:`Chart`: a Plotly figure with a title and a caption that says what to look at, or,
when its source is missing (no payments file: receivables unknown; no earlier run: no
migration), a note with the reason instead of a chart of zeros. The chart builders are public so
notebooks draw the same pictures.

The page opens offline: plotly.js is inlined once in the head and every figure only calls it;
nothing is fetched from a CDN or any other address.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from features.contracts import CONTRACTS
from features.warehouse import sql_text, table_exists

REPORT_TITLE = "crm-intel report"
CLV_BINS = 40
CHURN_BANDS = ("low", "medium", "high", "closed")
DELINQUENCY_CLASSES = ("A", "B", "C", "D", "E")
AGING_BUCKETS = {
    "not_due": "not due",
    "dpd_1_30": "1-30 days",
    "dpd_31_60": "31-60 days",
    "dpd_61_90": "61-90 days",
    "dpd_91_180": "91-180 days",
    "dpd_over_180": "over 180 days",
}
# ordered from good to bad, so a colour means the same thing in every picture
RISK_COLOURS = ("#2e7d32", "#9e9d24", "#f9a825", "#ef6c00", "#c62828", "#757575")
AGING_COLOURS = ("#2e7d32", "#9e9d24", "#f9a825", "#ef6c00", "#c62828", "#7f0000")
OUTCOME_COLOURS = {
    "staged": "#2e7d32",
    "superseded": "#90a4ae",
    "refused": "#6d4c41",
    "quarantined": "#c62828",
}
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
SEGMENTS_BY_VALUE = (
    "select rfm_segment from marts.segment_summary order by clv_total desc nulls last"
)


@dataclass(frozen=True)
class Chart:
    """One picture of the report, or the note saying why its source is missing."""

    key: str
    title: str
    caption: str
    figure: go.Figure | None = None
    note: str | None = None

    @property
    def drawn(self) -> bool:
        return self.figure is not None


@dataclass(frozen=True)
class Section:
    title: str
    charts: tuple[Chart, ...]


@dataclass(frozen=True)
class Report:
    """What the snapshot holds, as pictures, for one run and as-of date."""

    as_of_date: date
    run_id: str | None
    published_at: datetime | None
    sections: tuple[Section, ...]

    @property
    def charts(self) -> list[Chart]:
        return [chart for section in self.sections for chart in section.charts]

    @property
    def figures(self) -> int:
        """How many Plotly figures the page draws (notes are not figures)."""
        return sum(chart.drawn for chart in self.charts)

    @property
    def notes(self) -> list[Chart]:
        return [chart for chart in self.charts if not chart.drawn]


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    as_of_date: date
    figures: int
    notes: tuple[str, ...]
    size_bytes: int


# --- helpers ----------------------------------------------------------------------------------


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: dict | None = None) -> list[tuple]:
    return con.execute(query, params or {}).fetchall()


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.0f}"


def _figure(**layout: object) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 30, "b": 50},
        legend={"orientation": "h", "y": -0.2},
        **layout,
    )
    return figure


def finance_unknown_reason(con: duckdb.DuckDBPyConnection) -> str | None:
    """Why receivables are unknown (no payment known by the as-of date); None when known."""
    rows = _rows(con, "select finance_unknown_reason from marts.finance_status")
    return rows[0][0] if rows else "marts.finance_status is empty"


def snapshot_as_of(con: duckdb.DuckDBPyConnection) -> tuple[date, str | None, datetime | None]:
    """(as-of date, run id, published at) of the snapshot on ``con``."""
    published = _rows(
        con,
        "select as_of_date, run_id, published_at from ops.publications "
        "order by published_at desc limit 1",
    )
    if published:
        return published[0]
    return _rows(con, "select max(as_of_date), null, null from marts.customer_360")[0]


# --- customer value ---------------------------------------------------------------------------


def clv_horizon(con: duckdb.DuckDBPyConnection) -> str:
    """What the published CLV covers, in words: ``[clv] horizon_days`` as the scores carry it."""
    days = _rows(con, "select max(clv_horizon_days) from marts.customer_360")[0][0]
    return f"{days:,} days" if days else "the CLV horizon"


def clv_distribution(con: duckdb.DuckDBPyConnection) -> Chart:
    """Customers per CLV bin (binned in SQL; the top 1% share the last bin)."""
    bins = _rows(con, sql_text("report_clv_histogram"), {"bins": CLV_BINS})
    horizon = clv_horizon(con)
    title = f"CLV over {horizon} per customer"
    if not bins:
        return Chart("clv-distribution", title, "", note="no customer has a CLV in this snapshot")
    width = bins[0][2] - bins[0][1]
    regular = [b for b in bins if not b[3]]
    overflow = [b for b in bins if b[3]]
    figure = _figure(xaxis_title=f"CLV over {horizon}", yaxis_title="customers", bargap=0.05)
    figure.add_bar(
        x=[b[1] + width / 2 for b in regular],
        y=[b[4] for b in regular],
        width=width,
        name="customers",
        customdata=[[b[1], b[2], b[5]] for b in regular],
        hovertemplate="CLV %{customdata[0]:,.0f} to %{customdata[1]:,.0f}<br>"
        "%{y:,} customers, CLV %{customdata[2]:,.0f}<extra></extra>",
    )
    caption = (
        f"How many customers are expected to bring how much in the next {horizon}. Most value "
        "usually sits with few customers: compare the long right tail with the tall bars near "
        "zero."
    )
    if overflow:
        (_, start, end, _, customers, total) = overflow[0]
        figure.add_bar(
            x=[start + width / 2],
            y=[customers],
            width=width,
            name=f"top 1% (CLV {start:,.0f} to {end:,.0f})",
            marker_color="#c62828",
            hovertemplate=f"CLV {start:,.0f} to {end:,.0f}<br>%{{y:,}} customers, "
            f"CLV {total:,.0f}<extra></extra>",
        )
        caption += (
            f" The red bar gathers the top 1% ({customers:,} customers, CLV {start:,.0f} to "
            f"{end:,.0f}, together {total:,.0f}) so the others stay readable."
        )
    return Chart("clv-distribution", title, caption, figure)


def customer_equity_by_segment(con: duckdb.DuckDBPyConnection) -> Chart:
    """Customer equity (sum of CLV) per RFM segment, with the net figure in words."""
    segments = _rows(
        con,
        "select rfm_segment, clv_total, customers from marts.segment_summary "
        "order by clv_total desc nulls last",
    )
    title = "Customer equity by RFM segment"
    if not segments:
        return Chart("customer-equity", title, "", note="no segment in this snapshot")
    figure = _figure(yaxis_title=f"CLV over {clv_horizon(con)}")
    figure.add_bar(
        x=[s[0] for s in segments],
        y=[s[1] or 0 for s in segments],
        customdata=[s[2] for s in segments],
        hovertemplate="%{x}: CLV %{y:,.0f} from %{customdata:,} customers<extra></extra>",
    )
    equity = _rows(
        con,
        "select customer_equity_gross, customer_equity_net, expected_credit_loss_on_equity, "
        "finance_unknown_reason from marts.customer_equity",
    )
    caption = "Where next year's value sits: the segments to protect first are the tall bars."
    if equity:
        gross, net, loss, unknown = equity[0]
        caption += f" Customer equity {_money(gross)} gross"
        caption += (
            f"; net of expected credit loss unknown ({unknown})."
            if unknown
            else f", {_money(net)} net of {_money(loss)} expected credit loss."
        )
    return Chart("customer-equity", title, caption, figure)


def segment_sizes(con: duckdb.DuckDBPyConnection) -> Chart:
    """Customers per RFM segment, and how many of them a campaign can reach."""
    segments = _rows(
        con,
        "select rfm_segment, customers, contactable_customers from marts.segment_summary "
        "order by customers desc",
    )
    title = "Segment sizes and reach"
    if not segments:
        return Chart("segment-sizes", title, "", note="no segment in this snapshot")
    figure = _figure(yaxis_title="customers", barmode="group")
    figure.add_bar(x=[s[0] for s in segments], y=[s[1] for s in segments], name="customers")
    figure.add_bar(
        x=[s[0] for s in segments],
        y=[int(s[2]) for s in segments],
        name="with a consenting contact",
    )
    caption = (
        "Customers per RFM segment, and how many a campaign can reach (a contact who gave "
        "marketing consent). A wide gap means a segment you cannot e-mail."
    )
    return Chart("segment-sizes", title, caption, figure)


def segment_migration(con: duckdb.DuckDBPyConnection) -> Chart:
    """From which segment to which one customers went since the previous as-of date."""
    title = "Segment migration since the previous run"
    moves = _rows(
        con,
        "select from_segment, to_segment, customers, previous_as_of_date "
        "from marts.segment_migration "
        "where as_of_date = (select max(as_of_date) from marts.segment_migration)",
    )
    if not moves:
        return Chart(
            "segment-migration",
            title,
            "",
            note="No earlier run: migration compares this as-of date with the previous one in "
            "history, so it appears after the next nightly run (or a `crm-intel backfill`).",
        )
    previous = moves[0][3]
    # most valuable segment first on both axes, so the diagonal runs from the top left
    by_value = [row[0] for row in _rows(con, SEGMENTS_BY_VALUE)]
    seen = {m[0] for m in moves} | {m[1] for m in moves}
    segments = [s for s in by_value if s in seen] + sorted(seen - set(by_value))
    counts = {(m[0], m[1]): m[2] for m in moves}
    figure = _figure(xaxis_title="segment now", yaxis_title=f"segment on {previous}")
    figure.add_heatmap(
        x=segments,
        y=segments,
        z=[[counts.get((before, now), 0) for now in segments] for before in segments],
        colorscale="Blues",
        texttemplate="%{z:,}",
        hovertemplate="from %{y} to %{x}: %{z:,} customers<extra></extra>",
    )
    figure.update_layout(height=520, margin={"l": 140, "b": 120}, yaxis_autorange="reversed")
    moved = sum(m[2] for m in moves if m[0] != m[1])
    total = sum(m[2] for m in moves)
    caption = (
        f"Rows: segment on {previous}; columns: segment now. The diagonal stayed put; "
        f"{moved:,} of {total:,} customers moved. Look at flows out of Champions and Loyal into "
        "At risk or Can't lose them: those are the win-back lists."
    )
    return Chart("segment-migration", title, caption, figure)


# --- churn and delinquency --------------------------------------------------------------------


def churn_risk_bands(con: duckdb.DuckDBPyConnection) -> Chart:
    """Customers and the CLV at stake per churn risk band."""
    bands = _rows(
        con,
        "select coalesce(churn_risk_band, '(unscored)') as band, count(*), "
        "coalesce(sum(clv), 0) from marts.customer_360 group by 1 "
        "order by list_position($bands, band) nulls last",
        {"bands": list(CHURN_BANDS)},
    )
    title = "Churn risk bands"
    if not bands:
        return Chart("churn-bands", title, "", note="no customer in this snapshot")
    colours = {band: RISK_COLOURS[i * 2 % 6] for i, band in enumerate(CHURN_BANDS[:3])}
    figure = _figure(yaxis_title="customers")
    figure.add_bar(
        x=[b[0] for b in bands],
        y=[b[1] for b in bands],
        marker_color=[colours.get(b[0], RISK_COLOURS[-1]) for b in bands],
        customdata=[b[2] for b in bands],
        texttemplate="CLV %{customdata:,.0f}",
        textposition="outside",
        hovertemplate="%{x}: %{y:,} customers, CLV %{customdata:,.0f}<extra></extra>",
    )
    caption = (
        f"Customers per churn risk band, labelled with the CLV over {clv_horizon(con)} they "
        "carry. High risk with a large CLV is where retention pays; 'closed' accounts are out "
        "of scope."
    )
    return Chart("churn-bands", title, caption, figure)


def reliability_curve(con: duckdb.DuckDBPyConnection, target: str) -> Chart:
    """Predicted against observed rates on the holdout (``models.<target>_reliability``)."""
    table = f"models.{target}_reliability"
    title = f"{target.capitalize()} calibration on the holdout"
    key = f"{target}-reliability"
    if not table_exists(con, table):
        return Chart(key, title, "", note=f"{table} is not in this snapshot")
    bins = _rows(
        con,
        f"select scorer, mean_predicted, observed_rate, customers, holdout_cutoff from {table} "
        "where population = 'all' and customers > 0 order by scorer, bin_from",
    )
    chosen = _rows(
        con,
        f"select scorer, choice_reason from models.{target}_evaluation where chosen limit 1",
    )
    if not bins:
        reason = chosen[0][1] if chosen else "no holdout was evaluated"
        return Chart(key, title, "", note=f"No reliability bins: {reason}.")
    chosen_scorer = chosen[0][0] if chosen else None
    figure = _figure(
        xaxis_title="predicted probability", yaxis_title="observed rate", xaxis_range=[0, 1]
    )
    figure.add_scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name="perfect calibration",
        line={"dash": "dot", "color": "#9e9e9e"},
    )
    for scorer in dict.fromkeys(b[0] for b in bins):
        points = [b for b in bins if b[0] == scorer]
        figure.add_scatter(
            x=[p[1] for p in points],
            y=[p[2] for p in points],
            customdata=[p[3] for p in points],
            mode="lines+markers",
            name=f"{scorer} (chosen)" if scorer == chosen_scorer else scorer,
            line_width=3 if scorer == chosen_scorer else 1.5,
            hovertemplate="predicted %{x:.2f}, observed %{y:.2f} (%{customdata:,} customers)"
            "<extra></extra>",
        )
    cutoff = bins[0][4]
    caption = (
        f"Each point is a bin of customers scored at the holdout cutoff {cutoff}: the mean "
        "predicted probability against the share for whom it happened. Points on the dotted line "
        "mean the probabilities can be read as rates; above it the scorer under-predicts. Bins "
        "of few customers jump about: hover for their size."
    )
    return Chart(key, title, caption, figure)


def delinquency_class_mix(con: duckdb.DuckDBPyConnection) -> Chart:
    """Customers and open exposure per delinquency class (A safest to E)."""
    title = "Delinquency class mix"
    classes = _rows(
        con,
        "select coalesce(delinquency_class, '(unscored)') as class, count(*), "
        "sum(open_exposure), any_value(delinquency_unknown_reason) from marts.customer_360 "
        "group by 1 order by list_position($classes, class) nulls last",
        {"classes": list(DELINQUENCY_CLASSES)},
    )
    scored = [c for c in classes if c[0] != "(unscored)"]
    if not scored:
        reason = next((c[3] for c in classes if c[3]), None) or "no customer was scored"
        return Chart("delinquency-classes", title, "", note=f"Delinquency unknown: {reason}.")
    colours = dict(zip(DELINQUENCY_CLASSES, RISK_COLOURS, strict=False))
    figure = _figure(yaxis_title="customers")
    figure.add_bar(
        x=[c[0] for c in classes],
        y=[c[1] for c in classes],
        marker_color=[colours.get(c[0], RISK_COLOURS[-1]) for c in classes],
        customdata=[_money(c[2]) for c in classes],
        hovertemplate="class %{x}: %{y:,} customers, open exposure %{customdata}<extra></extra>",
    )
    caption = (
        "Customers per delinquency class, A (safest) to E, from the probability of falling 30+ "
        "days past due. Watch the D and E bars grow from one run to the next."
    )
    unscored = [c for c in classes if c[0] == "(unscored)"]
    if unscored:
        caption += f" {unscored[0][1]:,} customers are unscored: {unscored[0][3] or 'no score'}."
    return Chart("delinquency-classes", title, caption, figure)


# --- receivables ------------------------------------------------------------------------------


def receivables_aging(con: duckdb.DuckDBPyConnection) -> Chart:
    """Open receivables per aging bucket; a note when receivables are unknown."""
    title = "Receivables aging"
    unknown = finance_unknown_reason(con)
    if unknown:
        return Chart("receivables-aging", title, "", note=f"Receivables unknown: {unknown}.")
    columns = ", ".join(f"coalesce(sum({b}), 0)::double" for b in AGING_BUCKETS)
    totals = _rows(con, f"select {columns}, count(*) from marts.receivables_aging")[0]
    figure = _figure(yaxis_title="open amount")
    figure.add_bar(
        x=list(AGING_BUCKETS.values()),
        y=list(totals[: len(AGING_BUCKETS)]),
        marker_color=list(AGING_COLOURS),
        hovertemplate="%{x}: %{y:,.0f}<extra></extra>",
    )
    over_90 = sum(totals[4:6])
    caption = (
        f"Open invoices of {totals[-1]:,} customers by days past due. {_money(over_90)} is more "
        "than 90 days late: the right-hand bars are the collection list."
    )
    return Chart("receivables-aging", title, caption, figure)


def exposure_by_sector(con: duckdb.DuckDBPyConnection) -> Chart:
    """Open exposure, overdue and expected loss per sector (marts.portfolio_risk)."""
    title = "Exposure by sector"
    unknown = finance_unknown_reason(con)
    if unknown:
        return Chart("sector-exposure", title, "", note=f"Exposure unknown: {unknown}.")
    sectors = _rows(
        con,
        "select dimension_value, coalesce(exposure, 0)::double, coalesce(overdue, 0)::double, "
        "coalesce(expected_loss, 0) from marts.portfolio_risk where dimension = 'sector' "
        "order by exposure desc nulls last",
    )
    if not sectors:
        return Chart("sector-exposure", title, "", note="no sector in marts.portfolio_risk")
    names = [s[0] for s in sectors]
    figure = _figure(yaxis_title="amount", barmode="group")
    figure.add_bar(x=names, y=[s[1] for s in sectors], name="open exposure")
    figure.add_bar(x=names, y=[s[2] for s in sectors], name="overdue", marker_color="#ef6c00")
    figure.add_bar(x=names, y=[s[3] for s in sectors], name="expected loss", marker_color="#c62828")
    caption = (
        "Open exposure per sector with the part overdue and the expected loss (probability of "
        "delinquency times exposure). A sector whose red bar is large against its blue one is "
        "riskier than its size suggests."
    )
    return Chart("sector-exposure", title, caption, figure)


# --- CLV backtest -----------------------------------------------------------------------------


def clv_backtest_tracking(con: duckdb.DuckDBPyConnection) -> Chart:
    """Cumulative repeat purchases: actual against what the calibration fit expected."""
    title = "CLV backtest: repeat purchases tracked"
    tracking = _rows(
        con,
        "select period_end, cumulative_actual_repeat_purchases, "
        "cumulative_expected_repeat_purchases, cutoff_date from models.clv_backtest_tracking "
        "order by period",
    )
    if not tracking:
        skipped = _rows(
            con,
            "select metrics ->> 'reason' from models.model_runs where model = 'clv_backtest' "
            "order by created_at desc limit 1",
        )
        reason = (skipped[0][0] if skipped else None) or "no backtest in this snapshot"
        return Chart("clv-backtest", title, "", note=f"No CLV backtest: {reason}.")
    cutoff = tracking[0][3]
    figure = _figure(xaxis_title="period end", yaxis_title="cumulative repeat purchases")
    figure.add_scatter(
        x=[t[0] for t in tracking], y=[t[1] for t in tracking], mode="lines", name="actual"
    )
    figure.add_scatter(
        x=[t[0] for t in tracking],
        y=[t[2] for t in tracking],
        mode="lines",
        name="expected by the model",
        line_dash="dash",
    )
    figure.add_shape(
        type="line", x0=cutoff, x1=cutoff, y0=0, y1=1, yref="paper", line_color="#757575"
    )
    figure.add_annotation(
        x=cutoff, y=1, yref="paper", text=f"cutoff {cutoff}", showarrow=False, yanchor="bottom"
    )
    last_actual, last_expected = tracking[-1][1], tracking[-1][2]
    at_cutoff = next((t for t in tracking if t[0] >= cutoff), tracking[-1])
    holdout_actual = last_actual - at_cutoff[1]
    holdout_expected = last_expected - at_cutoff[2]
    caption = (
        f"The model was refitted on purchases up to {cutoff} and asked to predict what came "
        f"after. After the cutoff the customers made {holdout_actual:,.0f} repeat purchases "
        f"against {holdout_expected:,.0f} expected: the closer the dashed line follows the solid "
        "one, the more the CLV figures can be trusted."
    )
    return Chart("clv-backtest", title, caption, figure)


# --- data quality -----------------------------------------------------------------------------


def data_quality(con: duckdb.DuckDBPyConnection) -> tuple[Chart, Chart]:
    """Rows per staging table by outcome, and quarantined rows per table and reason."""
    loaded_title, reasons_title = "Rows loaded per table", "Rows quarantined, by reason"
    if not table_exists(con, "ops.data_quality"):
        note = (
            "This snapshot was published before ops.data_quality existed; the next `crm-intel "
            "run` publishes it."
        )
        return (
            Chart("rows-loaded", loaded_title, "", note=note),
            Chart("rows-quarantined", reasons_title, "", note=note),
        )
    outcomes = _rows(
        con,
        "select staging_table, outcome, sum(rows)::bigint from ops.data_quality "
        "group by all order by all",
    )
    tables = sorted({o[0] for o in outcomes})
    missing = [c.table for c in CONTRACTS if c.table not in tables]
    figure = _figure(
        xaxis_title="rows", barmode="stack", yaxis_autorange="reversed", showlegend=True
    )
    for outcome, colour in OUTCOME_COLOURS.items():
        counts = {o[0]: o[2] for o in outcomes if o[1] == outcome}
        if counts:
            figure.add_bar(
                y=tables,
                x=[counts.get(t, 0) for t in tables],
                orientation="h",
                name=outcome,
                marker_color=colour,
            )
    delivered = sum(o[2] for o in outcomes)
    quarantined = sum(o[2] for o in outcomes if o[1] == "quarantined")
    caption = (
        f"{delivered:,} delivered rows by what became of them: staged, superseded by a later "
        f"delivery of the same ids, in a refused file, or quarantined ({quarantined:,})."
    )
    if missing:
        caption += f" No file delivered for: {', '.join(missing)}."
    loaded = (
        Chart("rows-loaded", loaded_title, caption, figure)
        if outcomes
        else Chart("rows-loaded", loaded_title, "", note="No file has been loaded.")
    )
    reasons = _rows(
        con,
        "select staging_table, reason, sum(rows)::bigint from ops.data_quality "
        "where outcome = 'quarantined' group by all order by 3 desc",
    )
    if not reasons:
        return loaded, Chart(
            "rows-quarantined",
            reasons_title,
            "",
            note="No row was quarantined: every delivered row was staged or superseded.",
        )
    by_reason = _figure(
        xaxis_title="rows", barmode="stack", yaxis_autorange="reversed", showlegend=True
    )
    quarantine_tables = sorted({r[0] for r in reasons})
    for reason in dict.fromkeys(r[1] for r in reasons):
        counts = {r[0]: r[2] for r in reasons if r[1] == reason}
        by_reason.add_bar(
            y=quarantine_tables,
            x=[counts.get(t, 0) for t in quarantine_tables],
            orientation="h",
            name=reason,
        )
    top = ", ".join(f"{r[1]} {r[2]:,} ({r[0]})" for r in reasons[:3])
    caption = (
        f"Rows kept out of staging per table and reason; the largest: {top}. `crm-intel status` "
        "lists them; the rows themselves stay in the working warehouse's quarantine."
    )
    return loaded, Chart("rows-quarantined", reasons_title, caption, by_reason)


# --- the page ---------------------------------------------------------------------------------


def build_report(con: duckdb.DuckDBPyConnection) -> Report:
    """Every picture of the report from the snapshot open on ``con`` (read-only)."""
    as_of, run_id, published_at = snapshot_as_of(con)
    sections = (
        Section(
            "Customer value",
            (clv_distribution(con), customer_equity_by_segment(con), clv_backtest_tracking(con)),
        ),
        Section("Segments", (segment_sizes(con), segment_migration(con))),
        Section("Churn", (churn_risk_bands(con), reliability_curve(con, "churn"))),
        Section(
            "Credit risk and receivables",
            (
                delinquency_class_mix(con),
                reliability_curve(con, "delinquency"),
                receivables_aging(con),
                exposure_by_sector(con),
            ),
        ),
        Section("Data quality", data_quality(con)),
    )
    return Report(as_of, run_id, published_at, sections)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1rem 2rem; color: #212121; }
header { border-bottom: 1px solid #e0e0e0; margin-bottom: 1rem; }
h2 { margin-top: 2.5rem; border-bottom: 2px solid #1565c0; padding-bottom: .2rem; }
figure.chart { margin: 1.5rem 0; }
figure.chart h3 { margin-bottom: .2rem; }
p.caption { color: #424242; margin-top: .2rem; max-width: 75ch; }
p.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: .6rem 1rem; }
nav a { margin-right: 1rem; }
"""


def _chart_html(chart: Chart) -> str:
    parts = [f'<figure class="chart" id="{chart.key}">', f"<h3>{html.escape(chart.title)}</h3>"]
    if chart.figure is not None:
        parts.append(f'<p class="caption">{html.escape(chart.caption)}</p>')
        parts.append(
            chart.figure.to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=f"figure-{chart.key}",
                config=PLOTLY_CONFIG,
                default_width="100%",
            )
        )
    else:
        parts.append(f'<p class="note">{html.escape(chart.note or "")}</p>')
    parts.append("</figure>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The whole page: plotly.js inlined once in the head, then every section."""
    published = f", published {report.published_at:%Y-%m-%d %H:%M}" if report.published_at else ""
    run = f" (run {html.escape(report.run_id)}{published})" if report.run_id else ""
    sections = []
    for number, section in enumerate(report.sections, start=1):
        sections.append(f'<section id="section-{number}"><h2>{html.escape(section.title)}</h2>')
        sections.extend(_chart_html(chart) for chart in section.charts)
        sections.append("</section>")
    nav = " ".join(
        f'<a href="#section-{n}">{html.escape(s.title)}</a>'
        for n, s in enumerate(report.sections, start=1)
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{REPORT_TITLE} as of {report.as_of_date}</title>",
            f'<meta name="crm-intel-figures" content="{report.figures}">',
            f"<style>{STYLE}</style>",
            f'<script type="text/javascript">{get_plotlyjs()}</script>',
            "</head><body>",
            f"<header><h1>{REPORT_TITLE}</h1>",
            f'<p>As of <strong class="as-of">{report.as_of_date}</strong>{run}, from the '
            "published snapshot. Hover over a picture for exact figures.</p>",
            f"<nav>{nav}</nav></header>",
            *sections,
            "</body></html>",
        ]
    )


def write_report(con: duckdb.DuckDBPyConnection, out: Path) -> WrittenReport:
    """Write the report of the snapshot on ``con`` to ``out`` (a new file, renamed into place)."""
    report = build_report(con)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(render_html(report), encoding="utf-8")
    temporary.replace(out)
    return WrittenReport(
        path=out,
        as_of_date=report.as_of_date,
        figures=report.figures,
        notes=tuple(f"{chart.title}: {chart.note}" for chart in report.notes),
        size_bytes=out.stat().st_size,
    )
