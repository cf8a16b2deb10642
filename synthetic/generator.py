"""Synthetic CRM, invoice and credit-bureau exports with a known ground truth.

The purchase process is exactly the BG/NBD model (Fader, Hardie & Lee 2005) and spend is exactly
Gamma-Gamma, so the pipeline's CLV models can be checked against the parameters that made the
data. Everything else (payments, bureau scores, CRM activity) hangs off per-customer latents that
are written to ``truth/`` so churn and delinquency models can be checked too.

Payment discipline and bureau dynamics are calibrated to published figures, so models tuned on
the demo meet realistic base rates: about 9% of active customers have an invoice more than 30
days past due within a year (payment studies of European B2B trade), bureaus re-rate a few
percent of firms a month, and debts over 90 days past due are a small minority of open
receivables. ``REGIMES`` bend that default ledger into the cases that break naive models.

Every step is vectorised over customers and rows (numpy segment tricks, polars for strings), so a
million customers take minutes, not hours. Each part draws from its own child random stream, so
leaving a file group out or adding faults never changes the rows of the other files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

__all__ = [
    "FAULT_KINDS",
    "FILE_GROUPS",
    "REGIMES",
    "GenerationSummary",
    "TrueParameters",
    "generate_demo_data",
]

FILE_GROUPS: tuple[str, ...] = (
    "crm/accounts",
    "crm/contacts",
    "crm/activities",
    "crm/opportunities",
    "invoices/invoices",
    "invoices/payments",
    "credit/reports",
)

FAULT_KINDS: tuple[str, ...] = (
    "missing_required",
    "bad_date",
    "bad_number",
    "negative_amount",
    "duplicate_key",
    "unknown_customer",
    "due_before_issue",
    "payment_exceeds_invoice",
    "unknown_currency",
)

TIME_UNIT_DAYS = 7
_EPOCH = date(1970, 1, 1)
_CURRENCY = "EUR"


@dataclass(frozen=True)
class _Regime:
    """How a regime bends the default ledger; written to the truth with its name."""

    description: str
    history_months: int | None = None  # months of history before end_date (None: all)
    failing_share: float = 0.15  # share of leavers that leave because they are failing
    lateness_scale: float = 1.0  # how strongly slack and distress delay or stop payments
    dispute_rate: float = 0.0025  # invoices disputed, then paid 30-120 days late
    without: frozenset[str] = frozenset()  # file groups the source system does not export


_REGIMES: dict[str, _Regime] = {
    "default": _Regime("the calibrated ledger, every file group"),
    "short_history": _Regime(
        "the systems went live 5 months before end_date: every file starts then", history_months=5
    ),
    "few_delinquent": _Regime(
        "a prudent book: disciplined payers, rare failures and disputes, so only a handful of "
        "customers are ever more than 30 days past due",
        failing_share=0.01,
        lateness_scale=0.15,
        dispute_rate=0.0001,
    ),
    "no_payments": _Regime(
        "the ERP exports no payments: settlement must be inferred or skipped",
        without=frozenset({"invoices/payments"}),
    ),
    "no_crm_activity": _Regime(
        "the CRM logs no activities: engagement features are missing",
        without=frozenset({"crm/activities"}),
    ),
}
REGIMES: tuple[str, ...] = tuple(_REGIMES)


@dataclass(frozen=True)
class TrueParameters:
    """Population parameters of the purchase and spend processes, in weeks (lifetimes' names).

    Defaults describe a B2B wholesaler: a typical account orders about every 7 weeks
    (E[lambda] = r/alpha = 0.15 per week), stays for about 11 repeat orders before it silently
    leaves (E[p] = a/(a+b) = 0.09) and spends about 3,000 EUR per invoice
    (E[spend] = p*v/(q-1) = 3,000), with a long right tail of big accounts.
    """

    r: float = 1.2  # shape of the Gamma over purchase rates lambda (per week)
    alpha: float = 8.0  # rate of that Gamma
    a: float = 0.6  # Beta over the dropout probability after each repeat purchase
    b: float = 6.0
    p: float = 6.0  # shape of each invoice amount ~ Gamma(p, rate=nu_i)
    q: float = 4.0  # nu_i ~ Gamma(shape=q, rate=v)
    v: float = 1500.0


@dataclass(frozen=True)
class GenerationSummary:
    """What was written, for the CLI to print and for tests to find the files."""

    out_dir: Path
    customers: int
    invoices: int
    payments: int
    credit_reports: int
    activities: int
    start_date: date
    end_date: date
    files: dict[str, Path] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    regime: str = "default"


# --- reference data: skewed the way a European wholesaler's ledger is ---------------------------

_COUNTRIES = np.array(["DE", "FR", "IT", "ES", "NL", "BE", "AT", "PL", "PT", "SE"])
_COUNTRY_WEIGHTS = np.array([0.30, 0.17, 0.13, 0.11, 0.08, 0.05, 0.05, 0.05, 0.03, 0.03])
_COUNTRY_PHONE = np.array(["+49", "+33", "+39", "+34", "+31", "+32", "+43", "+48", "+351", "+46"])
_LEGAL_FORM = np.array(
    ["GmbH", "SAS", "S.p.A.", "S.L.", "B.V.", "NV", "GmbH", "Sp. z o.o.", "Lda", "AB"]
)
_REGIONS = np.array(["North", "South", "East", "West", "Central"])
_REGION_WEIGHTS = np.array([0.22, 0.25, 0.15, 0.23, 0.15])
_SECTORS = np.array(
    [
        "retail",
        "hospitality",
        "construction",
        "manufacturing",
        "healthcare",
        "wholesale",
        "public_sector",
        "technology",
        "logistics",
        "agriculture",
    ]
)
_SECTOR_WEIGHTS = np.array([0.22, 0.14, 0.12, 0.14, 0.07, 0.10, 0.04, 0.07, 0.06, 0.04])
_SECTOR_TERMS_DAYS = np.array([30, 30, 60, 45, 60, 45, 60, 30, 45, 60])
_SIZE_BANDS = np.array(["S", "M", "L", "XL"])
_SIZE_WEIGHTS = np.array([0.55, 0.28, 0.13, 0.04])
_NAME_STEMS = np.array(
    [
        "Nord", "Alpen", "Rhein", "Atlas", "Vega", "Orion", "Delta", "Iberia", "Baltic", "Danube",
        "Helios", "Sierra", "Lumen", "Astra", "Boreal", "Castell", "Meridian", "Polar", "Terra",
        "Vista", "Nova", "Aurora", "Granit", "Kobalt", "Linden", "Mistral", "Oase", "Prisma",
    ]
)  # fmt: skip
_NAME_TRADES = np.array(
    ["Handel", "Foods", "Bau", "Tech", "Pharma", "Trading", "Logistik", "Supplies", "Partners",
     "Industrie", "Distribution", "Group", "Services", "Werke"]
)  # fmt: skip
_ROLES = np.array(["purchasing", "finance", "owner", "operations", "logistics"])
# Contact names: picked by the contact's number, not drawn, so adding them moved no random stream.
_FIRST_NAMES = np.array(
    ["Anna", "Lukas", "Marie", "Jan", "Sofia", "Luca", "Emma", "Pierre", "Julia", "Mateo",
     "Eva", "Tomas", "Ines", "Piotr", "Sara", "Joao", "Lena", "Bram", "Clara", "Nils"]
)  # fmt: skip
_LAST_NAMES = np.array(
    ["Muller", "Martin", "Rossi", "Garcia", "de Vries", "Peeters", "Gruber", "Nowak", "Silva",
     "Andersson", "Schmidt", "Bernard", "Russo", "Lopez", "Jansen", "Maes", "Huber", "Kowalski",
     "Santos", "Johansson"]
)  # fmt: skip
_ROLE_WEIGHTS = np.array([0.40, 0.25, 0.15, 0.12, 0.08])
_ACTIVITY_TYPES = np.array(["call", "email", "meeting", "ticket"])
_ACTIVITY_MIX = np.array([0.35, 0.40, 0.15, 0.10])
# In the ~90 days before dropout: less talking, more complaining.
_ACTIVITY_FADE = np.array([0.30, 0.30, 0.30, 2.0])
_OPEN_STAGES = np.array(["prospecting", "proposal", "negotiation"])
_RATINGS = np.array(["D", "C", "B2", "B1", "A2", "A1"])
_RATING_CUTS = np.array([20, 35, 50, 65, 80])  # failure_score thresholds between classes
# A bureau re-rates a firm when news reaches it, not every month: a routine review now and then,
# and at once when distress jumps (a shock, a failing firm's slide).
_REVIEW_RATE = 0.06
_REVIEW_JUMP = 0.05

_TRUTH_DESCRIPTION = {
    "birth_date": "day of the first purchase (time 0 of the BG/NBD process)",
    "purchase_rate_per_week": "lambda_i ~ Gamma(shape=r, rate=alpha): Poisson purchase rate",
    "dropout_probability": "p_i ~ Beta(a, b): chance of leaving right after each repeat purchase",
    "dropout_date": "day of the repeat purchase after which the customer left; null if alive",
    "alive_at_end": "true when the customer had not dropped out by end_date",
    "mean_spend": "true expected invoice amount p/nu_i, nu_i ~ Gamma(shape=q, rate=v)",
    "payment_discipline": "Beta(6, 2); slack = 1 - discipline; firms with slack over 0.3 pay "
    "habitually late (60 days per unit of slack above 0.3)",
    "distress_at_end": "financial distress in [0, 1] in the last month; a monthly mean-reverting "
    "random walk around a Beta(1, 14) baseline with rare shocks (0.4% a month); distress over "
    "0.2 delays payments, over 0.4 leaves invoices unpaid; drives bureau scores and legal events",
    "has_bureau_coverage": "whether the credit bureau reports on this customer",
    "failed": "left because failing (regime's failing_share of leavers): distress climbs over "
    "the 6 months before dropout, so the last invoices are paid very late or never",
}


# --- small vectorised helpers --------------------------------------------------------------------


def _day_number(d: date) -> int:
    return (d - _EPOCH).days


def _as_date(days: np.ndarray) -> pl.Series:
    """Day numbers (days since 1970-01-01) to a polars Date column."""
    return pl.Series(days.astype(np.int32)).cast(pl.Date)


def _month_of(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _first_day_of_month(months: np.ndarray) -> np.ndarray:
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _position_in_segment(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each run of ``np.repeat(..., counts)``: the loop-free row counter."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _codes(prefix: str, numbers: np.ndarray, width: int) -> pl.Series:
    """Business keys such as C0000001: prefix plus zero-padded number."""
    digits = pl.Series(numbers.astype(np.int64)).cast(pl.String).str.zfill(width)
    return pl.select(pl.lit(prefix) + digits).to_series()


def _choice(rng: np.random.Generator, n: int, weights: np.ndarray) -> np.ndarray:
    """Index draws with given weights; searchsorted keeps it fast for tens of millions."""
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def _cents_to_text(cents: pl.Expr) -> pl.Expr:
    """Fixed two-decimal text for integer cents, as a CSV export would print it."""
    sign = pl.when(cents < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    units = (cents.abs() // 100).cast(pl.String)
    frac = (cents.abs() % 100).cast(pl.String).str.zfill(2)
    return pl.concat_str([sign, units, pl.lit("."), frac])


def _write(df: pl.DataFrame, out_dir: Path, group: str, file_format: str) -> Path:
    """One file per group; no Parquet statistics so bytes depend on the data only."""
    path = out_dir / f"{group}.{file_format}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if file_format == "csv":
        df.write_csv(path, float_precision=2, date_format="%Y-%m-%d")
    else:
        df.write_parquet(path, statistics=False)
    return path


# --- latent customers ----------------------------------------------------------------------------


@dataclass
class _Population:
    """Per-customer latents and attributes, one array entry per customer."""

    birth: np.ndarray  # day number of the first purchase
    created: np.ndarray  # day the account was opened in the CRM
    lam: np.ndarray  # purchases per week
    dropout_p: np.ndarray
    nu: np.ndarray  # Gamma-Gamma rate of the spend distribution
    country: np.ndarray
    region: np.ndarray
    sector: np.ndarray
    size_band: np.ndarray
    discipline: np.ndarray
    covered: np.ndarray
    distress: np.ndarray  # (customers, months) float32, month 0 = start month
    first_month: int


def _draw_population(
    rng: np.random.Generator, n: int, start: int, end: int, params: TrueParameters
) -> _Population:
    """Latents first, so every file is a view of the same customers."""
    span = end - start
    birth = start + np.floor(rng.random(n) * 0.6 * (span + 1)).astype(np.int64)
    created = np.maximum(birth - rng.integers(0, 61, n), start)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    dropout_p = np.clip(rng.beta(params.a, params.b, n), 1e-12, 1.0)
    nu = rng.gamma(params.q, 1.0 / params.v, n)
    country = _choice(rng, n, _COUNTRY_WEIGHTS)
    region = _choice(rng, n, _REGION_WEIGHTS)
    sector = _choice(rng, n, _SECTOR_WEIGHTS)
    # Bigger firms place bigger orders: the band is read off the (noisy) true order size, so it
    # is informative while the Gamma-Gamma spend truth stays exact.
    size_score = np.log(params.p / nu) + rng.normal(0.0, 0.5, n)
    cuts = np.quantile(size_score, np.cumsum(_SIZE_WEIGHTS)[:-1])
    size_band = np.searchsorted(cuts, size_score, side="right")
    discipline = rng.beta(6.0, 2.0, n)
    covered = rng.random(n) < 0.85

    first_month = int(_month_of(np.array([start]))[0])
    months = int(_month_of(np.array([end]))[0]) - first_month + 1
    # Distress: mean-reverting monthly walk around a customer baseline, with rare shocks that
    # fade over a few months. Most firms are sound (baseline mean 0.07); a shock hits ~5% of
    # firms a year. Loop over months only; each step is vectorised over customers.
    baseline = rng.beta(1.0, 14.0, n).astype(np.float32)
    distress = np.empty((n, months), dtype=np.float32)
    level = baseline.copy()
    for m in range(months):
        noise = rng.standard_normal(n, dtype=np.float32) * np.float32(0.015)
        shock = (rng.random(n, dtype=np.float32) < 0.004) * rng.uniform(0.2, 0.5, n).astype(
            np.float32
        )
        level = np.clip(level + 0.12 * (baseline - level) + noise + shock, 0.0, 1.0)
        distress[:, m] = level
    return _Population(
        birth=birth,
        created=created,
        lam=lam,
        dropout_p=dropout_p,
        nu=nu,
        country=country,
        region=region,
        sector=sector,
        size_band=size_band,
        discipline=discipline,
        covered=covered,
        distress=distress,
        first_month=first_month,
    )


def _distress_before_failure(
    rng: np.random.Generator, pop: _Population, dropout_day: np.ndarray, failing_share: float
) -> np.ndarray:
    """Some leavers leave because they are failing: distress climbs over their last six months
    and stays high. Purchases never read distress, so the BG/NBD truth is untouched, but
    payments and bureau scores carry a churn signal, as in real ledgers. The default share
    (15% of leavers, ~3% of active customers a year) sits with published insolvency and
    severe-delay rates; returns who failed."""
    failed = (dropout_day >= 0) & (rng.random(len(dropout_day)) < failing_share)
    failing = np.flatnonzero(failed)
    drop_month = _month_of(dropout_day[failing]) - pop.first_month
    months_from_drop = np.arange(pop.distress.shape[1])[None, :] - drop_month[:, None]
    climb = 0.45 * np.clip((months_from_drop + 6) / 6.0, 0.0, 1.3)
    pop.distress[failing] = np.clip(pop.distress[failing] + climb, 0.0, 1.0)
    return failed


@dataclass
class _Purchases:
    customer: np.ndarray  # customer index per purchase (first purchase included)
    day: np.ndarray
    dropout_day: np.ndarray  # per customer, -1 when alive at end


def _draw_purchases(rng: np.random.Generator, pop: _Population, end: int) -> _Purchases:
    """Exact BG/NBD: Poisson purchases, dropout with prob p after each repeat purchase.

    Given N(T) = n purchases in (0, T], their times are n sorted uniforms; the customer drops
    out after repeat purchase J ~ Geometric(p), so we observe the first min(n, J). The first k
    of n sorted uniforms are cumsum(E_1..E_k) / (cumsum(E_1..E_k) + Gamma(n + 1 - k)), which
    gives every purchase time without a loop over customers.
    """
    n_cust = len(pop.birth)
    horizon_days = (end - pop.birth).astype(np.float64)
    horizon_weeks = horizon_days / TIME_UNIT_DAYS
    n_in_window = rng.poisson(pop.lam * horizon_weeks)
    purchases_until_dropout = rng.geometric(pop.dropout_p)
    observed = np.minimum(n_in_window, purchases_until_dropout)
    dropped = purchases_until_dropout <= n_in_window
    # At most one purchase a day (see _one_purchase_per_day): a customer drawn with more repeats
    # than days left before the end keeps one a day. Never binds at the default rates; at fifty
    # invoices a customer it keeps a late, heavy buyer's purchases after its first.
    observed = np.minimum(observed, np.maximum(end - pop.birth, 0))

    spacing = rng.standard_exponential(int(observed.sum()))
    running = np.cumsum(spacing)
    seg_end = np.cumsum(observed)
    seg_start = seg_end - observed
    before = np.concatenate([[0.0], running])[seg_start]
    within = running - np.repeat(before, observed)
    last = np.where(observed > 0, np.concatenate([[0.0], running])[seg_end] - before, 0.0)
    rest = rng.gamma(np.maximum(n_in_window - observed + 1, 1).astype(np.float64))
    denominator = np.repeat(last + rest, observed)
    owner = np.repeat(np.arange(n_cust, dtype=np.int64), observed)
    offset_days = np.floor(within / denominator * horizon_days[owner]).astype(np.int64)
    repeat_day = pop.birth[owner] + offset_days

    # Lay out each customer's purchases (first one at birth, then the repeats, already sorted).
    per_customer = 1 + observed
    customer = np.repeat(np.arange(n_cust, dtype=np.int64), per_customer)
    rank = _position_in_segment(per_customer)
    is_birth = rank == 0
    day = np.empty(len(customer), dtype=np.int64)
    day[is_birth] = pop.birth
    day[~is_birth] = repeat_day
    day = _one_purchase_per_day(customer, rank, day, per_customer, end)

    dropout_day = np.full(n_cust, -1, dtype=np.int64)
    last_row = np.cumsum(per_customer) - 1
    dropout_day[dropped] = day[last_row[dropped]]
    return _Purchases(customer=customer, day=day, dropout_day=dropout_day)


def _one_purchase_per_day(
    customer: np.ndarray, rank: np.ndarray, day: np.ndarray, per_customer: np.ndarray, end: int
) -> np.ndarray:
    """Move a purchase that shares a day with the previous one to the next free day.

    lifetimes (and the pipeline) merge same-day invoices into one purchase; merging would thin
    the Poisson process by ~E[lambda^2]/E[lambda]/7 (about 4% with the defaults) and bias alpha.
    Shifting keeps every purchase, moving a few by a day or two. Vectorised as a per-customer
    running maximum of (day - rank); purchases pushed past end_date are pulled back before it.
    """
    big = np.int64(1 << 40)
    shifted = day - rank + customer * big
    pushed = np.maximum.accumulate(shifted) - customer * big + rank
    remaining = np.repeat(per_customer, per_customer) - 1 - rank
    return np.minimum(pushed, end - remaining)


# --- ledger: invoices, credit notes, payments ----------------------------------------------------


@dataclass
class _Ledger:
    """Invoice rows in file order (sorted by issue date) and their payments."""

    customer: np.ndarray
    issue: np.ndarray
    due: np.ndarray
    cents: np.ndarray  # signed as written to the file
    is_credit: np.ndarray
    pay_invoice: np.ndarray  # row index into the invoice arrays
    pay_day: np.ndarray
    pay_cents: np.ndarray


def _draw_ledger(
    rng: np.random.Generator,
    pop: _Population,
    buys: _Purchases,
    params: TrueParameters,
    end: int,
    regime: _Regime,
) -> _Ledger:
    """Gamma-Gamma amounts, sector payment terms, credit notes, then payment behaviour."""
    cust = buys.customer
    amount = rng.gamma(params.p, 1.0 / pop.nu[cust])
    cents = np.maximum(np.round(amount * 100.0), 100).astype(np.int64)
    terms = _SECTOR_TERMS_DAYS[pop.sector[cust]]

    # ~2% of invoices get a partial credit note a few days later; half signed negative, half
    # positive (ERP exports disagree on the sign). Credit notes after end_date were not exported.
    # A credit note carries no invoice reference and is read as correcting the customer's latest
    # invoice, so it comes before the customer's next purchase (else that invoice would look
    # short-paid forever).
    credited = np.flatnonzero(rng.random(len(cust)) < 0.02)
    next_day = np.append(buys.day[1:], end + 10_000)
    next_day[np.flatnonzero(cust[1:] != cust[:-1])] = end + 10_000
    credit_day = np.minimum(
        buys.day[credited] + rng.integers(2, 21, len(credited)), next_day[credited] - 1
    )
    credit_cents = np.maximum(
        np.round(cents[credited] * rng.uniform(0.05, 0.5, len(credited))), 100
    ).astype(np.int64)
    negative = rng.random(len(credited)) < 0.5
    exported = credit_day <= end
    credited, credit_day = credited[exported], credit_day[exported]
    credit_cents, negative = credit_cents[exported], negative[exported]
    net_cents = cents.copy()
    net_cents[credited] -= np.minimum(credit_cents, cents[credited] - 100)

    # Payment behaviour from discipline and the distress of the month the invoice was issued.
    # Most firms pay within a few days of terms; habitual slow payers (slack over 0.3), firms in
    # distress (over 0.2) and disputed invoices make the few severe delays; only real distress
    # (over 0.4) leaves invoices unpaid.
    n_inv = len(cust)
    month = _month_of(buys.day) - pop.first_month
    distress = pop.distress[cust, month].astype(np.float64)
    slack = 1.0 - pop.discipline[cust]
    scale = regime.lateness_scale
    unpaid = rng.random(n_inv) < scale * (0.0003 + 1.2 * np.maximum(distress - 0.4, 0.0))
    habit = -3.0 + scale * 60.0 * np.maximum(slack - 0.3, 0.0)
    strain = scale * 150.0 * np.maximum(distress - 0.2, 0.0)
    spread = 3.0 + 10.0 * slack
    disputed = rng.random(n_inv) < regime.dispute_rate
    dispute_days = np.where(disputed, rng.integers(30, 121, n_inv), 0)
    noise = spread * rng.standard_normal(n_inv)
    late = np.round(habit + strain + noise).astype(np.int64) + dispute_days
    due = buys.day + terms
    pay_day = np.maximum(due + late, buys.day)
    split = rng.random(n_inv) < 0.06
    first_share = rng.uniform(0.3, 0.7, n_inv)
    second_gap = rng.integers(5, 21, n_inv)  # the rest follows within weeks, not months

    paid = np.flatnonzero(~unpaid)
    parts = paid[split[paid]]
    first_cents = np.where(split, np.round(net_cents * first_share).astype(np.int64), net_cents)
    pay_invoice = np.concatenate([paid, parts])
    pay_days = np.concatenate([pay_day[paid], pay_day[parts] + second_gap[parts]])
    pay_cents = np.concatenate([first_cents[paid], net_cents[parts] - first_cents[parts]])
    # The export was taken on end_date: later payments do not exist yet.
    visible = pay_days <= end
    pay_invoice, pay_days, pay_cents = pay_invoice[visible], pay_days[visible], pay_cents[visible]

    all_customer = np.concatenate([cust, cust[credited]])
    all_issue = np.concatenate([buys.day, credit_day])
    all_due = np.concatenate([due, credit_day])
    all_cents = np.concatenate([cents, np.where(negative, -credit_cents, credit_cents)])
    all_credit = np.concatenate([np.zeros(n_inv, bool), np.ones(len(credited), bool)])
    order = np.lexsort((all_credit, all_customer, all_issue))
    new_position = np.empty_like(order)
    new_position[order] = np.arange(len(order))
    pay_order = np.lexsort((new_position[pay_invoice], pay_days))
    return _Ledger(
        customer=all_customer[order],
        issue=all_issue[order],
        due=all_due[order],
        cents=all_cents[order],
        is_credit=all_credit[order],
        pay_invoice=new_position[pay_invoice][pay_order],
        pay_day=pay_days[pay_order],
        pay_cents=pay_cents[pay_order],
    )


# --- CRM -----------------------------------------------------------------------------------------


def _tax_ids(n: int) -> pl.Series:
    """Unique tax ids that do not look sequential: an affine bijection modulo 10^9."""
    numbers = (np.arange(n, dtype=np.int64) * 7_919_993 + 104_729) % 1_000_000_000
    return _codes("TX", numbers, 9)


def _accounts(
    rng: np.random.Generator, pop: _Population, ids: pl.Series, dropout: np.ndarray, end: int
) -> pl.DataFrame:
    """The CRM's account master; the tax id is the key the bureau knows the customer by."""
    n = len(pop.birth)
    stem = _NAME_STEMS[rng.integers(0, len(_NAME_STEMS), n)]
    trade = _NAME_TRADES[rng.integers(0, len(_NAME_TRADES), n)]
    # Accounts that left long ago are often closed in the CRM; the rest still look active.
    long_gone = (dropout >= 0) & (dropout < end - 180)
    closed = long_gone & (rng.random(n) < 0.6)
    return pl.DataFrame(
        {
            "customer_id": ids,
            "name": pl.Series(stem) + " " + pl.Series(trade) + " " + _LEGAL_FORM[pop.country],
            "tax_id": _tax_ids(n),
            "country": _COUNTRIES[pop.country],
            "region": _REGIONS[pop.region],
            "sector": _SECTORS[pop.sector],
            "size_band": _SIZE_BANDS[pop.size_band],
            "created_at": _as_date(pop.created),
            "status": np.where(closed, "closed", "active"),
        }
    )


def _contacts(rng: np.random.Generator, pop: _Population, ids: pl.Series, end: int) -> pl.DataFrame:
    n = len(pop.birth)
    per_account = 1 + _choice(rng, n, np.array([0.5, 0.35, 0.15]))
    owner = np.repeat(np.arange(n, dtype=np.int64), per_account)
    rows = len(owner)
    role = _ROLES[_choice(rng, rows, _ROLE_WEIGHTS)]
    number = _position_in_segment(per_account) + 1
    span = end - pop.created[owner] + 1
    consent_day = pop.created[owner] + np.floor(rng.random(rows) * span).astype(np.int64)
    owner_ids = ids.gather(owner)
    phone_digits = rng.integers(100_000_000, 1_000_000_000, rows)
    frame = pl.DataFrame(
        {
            "contact_id": _codes("CON", np.arange(1, rows + 1), 8),
            "customer_id": owner_ids,
            "role": role,
            "number": number,
            "phone": pl.Series(_COUNTRY_PHONE[pop.country[owner]])
            + " "
            + pl.Series(phone_digits).cast(pl.String),
            "marketing_consent": rng.random(rows) < 0.7,
            "consent_updated_at": _as_date(consent_day),
        }
    )
    index = np.arange(rows)
    return frame.select(
        "contact_id",
        "customer_id",
        first_name=pl.Series(_FIRST_NAMES[index % len(_FIRST_NAMES)]),
        last_name=pl.Series(
            _LAST_NAMES[(index * 7 + index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
        ),
        email=pl.concat_str(
            pl.col("role"),
            pl.col("number").cast(pl.String),
            pl.lit("@"),
            pl.col("customer_id").str.to_lowercase(),
            pl.lit(".example.com"),
        ),
        phone="phone",
        role="role",
        marketing_consent="marketing_consent",
        consent_updated_at="consent_updated_at",
    )


def _activities(
    rng: np.random.Generator,
    pop: _Population,
    ids: pl.Series,
    dropout: np.ndarray,
    end: int,
    engagement_signal: bool,
) -> pl.DataFrame:
    """Calls, emails, meetings, tickets at a rate tied to the purchase rate.

    With the engagement signal, a leaving customer's contact fades (and tickets rise) in the
    90 days before the dropout date, and only rare activity follows it. Built as piecewise
    constant-rate segments, so Poisson counts plus uniform times fill them without loops.
    """
    n = len(pop.birth)
    per_day = (0.04 + 0.6 * pop.lam) / 7.0
    start = pop.created
    if engagement_signal:
        gone = dropout >= 0
        fade_from = np.where(gone, np.maximum(start, dropout - 90), end + 1)
        fade_end = np.where(gone, dropout + 1, end + 1)
        segments = [
            (start, fade_from - start, per_day, _ACTIVITY_MIX),
            (fade_from, fade_end - fade_from, per_day, _ACTIVITY_MIX * _ACTIVITY_FADE),
            (fade_end, end + 1 - fade_end, per_day * 0.05, _ACTIVITY_MIX),
        ]
    else:
        segments = [(start, end + 1 - start, per_day, _ACTIVITY_MIX)]

    owners, days, kinds = [], [], []
    for seg_start, length, rate, mix in segments:  # at most three segment kinds, not customers
        length = np.maximum(length, 0)
        count = rng.poisson(rate * mix.sum() * length)
        owner = np.repeat(np.arange(n, dtype=np.int64), count)
        offset = np.floor(rng.random(len(owner)) * length[owner]).astype(np.int64)
        owners.append(owner)
        days.append(seg_start[owner] + offset)
        kinds.append(_choice(rng, len(owner), mix))
    owner, day, kind = np.concatenate(owners), np.concatenate(days), np.concatenate(kinds)
    order = np.lexsort((owner, day))
    owner, day, kind = owner[order], day[order], kind[order]
    return pl.DataFrame(
        {
            "activity_id": _codes("ACT", np.arange(1, len(owner) + 1), 9),
            "customer_id": ids.gather(owner),
            "type": _ACTIVITY_TYPES[kind],
            "occurred_at": _as_date(day),
        }
    )


def _opportunities(
    rng: np.random.Generator,
    pop: _Population,
    ids: pl.Series,
    mean_spend: np.ndarray,
    dropout: np.ndarray,
    end: int,
) -> pl.DataFrame:
    """A handful of deals per account, sized on its order value; none long after it left."""
    n = len(pop.birth)
    per_account = 1 + rng.poisson(1.5, n)
    owner = np.repeat(np.arange(n, dtype=np.int64), per_account)
    rows = len(owner)
    last_day = np.where(dropout >= 0, np.minimum(dropout + 60, end), end)
    span = last_day[owner] - pop.created[owner] + 1
    created = pop.created[owner] + np.floor(rng.random(rows) * span).astype(np.int64)
    closes = created + rng.integers(7, 121, rows)
    is_open = closes > end
    won = rng.random(rows) < 0.4
    open_stage = _OPEN_STAGES[_choice(rng, rows, np.array([0.4, 0.35, 0.25]))]
    stage = np.where(is_open, open_stage, np.where(won, "closed_won", "closed_lost"))
    amount = np.round(mean_spend[owner] * (2.0 + rng.gamma(2.0, 2.0, rows)), -2)
    order = np.lexsort((owner, created))
    return pl.DataFrame(
        {
            "opportunity_id": _codes("OPP", np.arange(1, rows + 1), 8),
            "customer_id": ids.gather(owner[order]),
            "stage": stage[order],
            "amount": amount[order],
            "currency": np.full(rows, _CURRENCY),
            "created_at": _as_date(created[order]),
            "closed_at": _as_date(closes[order]).set(pl.Series(is_open[order]), None),
            "won": pl.Series(won[order]).set(pl.Series(is_open[order]), None),
        }
    )


# --- bureau --------------------------------------------------------------------------------------


def _last_review(rng: np.random.Generator, distress: np.ndarray) -> np.ndarray:
    """Month of the bureau's latest review of each firm, per customer and month.

    Routine reviews are rare and a jump in distress triggers one at once, so a rating holds for
    months and a few percent of ratings move a month, as in bureaus' transition matrices.
    """
    n, months = distress.shape
    jumped = np.zeros((n, months), dtype=bool)
    jumped[:, 1:] = np.abs(np.diff(distress, axis=1)) > _REVIEW_JUMP
    reviewed = jumped | (rng.random((n, months), dtype=np.float32) < _REVIEW_RATE)
    reviewed[:, 0] = True  # the bureau knew the firm before the window opened
    month = np.arange(months, dtype=np.int16)
    return np.maximum.accumulate(np.where(reviewed, month, np.int16(0)), axis=1)


def _credit_reports(
    rng: np.random.Generator, pop: _Population, tax_ids: pl.Series, mean_spend: np.ndarray, end: int
) -> pl.DataFrame:
    """Monthly bureau reports: lagged, noisy views of distress, so our payment data can beat them.

    Scores are set at a review and held until the next, so the rating, both scores and the credit
    limit move together. Legal events are facts of the month, not of the review.
    """
    covered = np.flatnonzero(pop.covered)
    first = _month_of(pop.birth[covered]) - pop.first_month
    last = int(_month_of(np.array([end]))[0]) - pop.first_month
    per_customer = last - first + 1
    owner = np.repeat(covered, per_customer)
    month = np.repeat(first, per_customer) + _position_in_segment(per_customer)
    reviewed = _last_review(rng, pop.distress)[owner, month]
    assessment_error = rng.standard_normal(pop.distress.shape, dtype=np.float32)
    error = 5.0 * assessment_error[owner, reviewed].astype(np.float64)
    seen = pop.distress[owner, reviewed].astype(np.float64)
    bias = rng.normal(0.0, 10.0, len(pop.birth))  # the bureau misjudges some firms for years
    failure = np.clip(np.round(82.0 - 120.0 * seen + bias[owner] + error), 1, 100).astype(np.int64)
    slack = 1.0 - pop.discipline[owner]
    delinquency = np.clip(
        np.round(92.0 - 100.0 * seen - 40.0 * slack + bias[owner] + error), 1, 100
    ).astype(np.int64)
    rating = _RATINGS[np.searchsorted(_RATING_CUTS, failure, side="right")]
    quarterly_spend = mean_spend[owner] * pop.lam[owner] * 13.0
    limit = np.maximum(np.round(quarterly_spend * (0.3 + failure / 100.0), -2), 500.0)
    distress = pop.distress[owner, month].astype(np.float64)
    legal = rng.poisson(0.0005 + 4.0 * np.maximum(distress - 0.3, 0.0) ** 2)
    return pl.DataFrame(
        {
            "tax_id": tax_ids.gather(owner),
            "report_date": _as_date(_first_day_of_month(month + pop.first_month)),
            "rating_class": rating,
            "failure_score": failure,
            "delinquency_score": delinquency,
            "credit_limit": limit.astype(np.int64),
            "legal_events": legal,
        }
    )


# --- faults --------------------------------------------------------------------------------------

_INVOICE_FAULTS = frozenset(FAULT_KINDS) - {"payment_exceeds_invoice"}


def _invoices_as_text(invoices: pl.DataFrame, cents: np.ndarray) -> pl.DataFrame:
    """The invoice file as an export prints it, so faulty text can sit next to good rows."""
    return invoices.with_columns(
        pl.col("issue_date").dt.to_string("%Y-%m-%d"),
        pl.col("due_date").dt.to_string("%Y-%m-%d"),
        amount=_cents_to_text(pl.lit(pl.Series(cents))),
    )


def _interleave(
    clean: pl.DataFrame, bad: pl.DataFrame, bad_slot: np.ndarray
) -> tuple[pl.DataFrame, np.ndarray]:
    """Insert bad rows before clean row ``bad_slot``; return the file and their 0-based rows."""
    key = np.concatenate([2 * np.arange(clean.height, dtype=np.int64), 2 * bad_slot - 1])
    order = np.argsort(key, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    merged = pl.concat([clean, bad], how="vertical").gather(order)
    return merged, position[clean.height :]


def _invoice_faults(
    rng: np.random.Generator,
    text: pl.DataFrame,
    ledger: _Ledger,
    kinds: list[str],
    rate: float,
    n_customers: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add one faulty row per fault (good rows are never altered or removed)."""
    n = text.height
    invoice_rows = np.flatnonzero(~ledger.is_credit)
    next_id = n + 1
    parts: list[pl.DataFrame] = []
    slots: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    reasons: list[str] = []
    for kind in kinds:  # a handful of fault kinds, each vectorised over its rows
        k = max(1, round(rate * n))
        base_rows = np.sort(rng.choice(invoice_rows, size=k, replace=k > len(invoice_rows)))
        base = text.gather(base_rows)
        new_ids = _codes("INV", np.arange(next_id, next_id + k), 9)
        next_id += k
        column = np.full(k, "invoice_id", dtype=object)
        slot = rng.integers(0, n + 1, k)
        flip = np.arange(k) % 2 == 1
        if kind == "missing_required":
            bad = base.with_columns(
                invoice_id=pl.when(pl.lit(pl.Series(flip))).then(None).otherwise(new_ids),
                customer_id=pl.when(pl.lit(pl.Series(flip))).then("customer_id").otherwise(None),
            )
            column = np.where(flip, "invoice_id", "customer_id").astype(object)
        elif kind == "bad_date":
            bad_text = np.where(flip, "not-a-date", "31/02/2024")
            bad = base.with_columns(invoice_id=new_ids, issue_date=pl.Series(bad_text))
            column[:] = "issue_date"
        elif kind == "bad_number":
            bad = base.with_columns(invoice_id=new_ids, amount=pl.lit("12,3x"))
            column[:] = "amount"
        elif kind == "negative_amount":
            bad = base.with_columns(invoice_id=new_ids, amount="-" + pl.col("amount"))
            column[:] = "amount"
        elif kind == "duplicate_key":
            cents = np.abs(ledger.cents[base_rows])
            other = np.round(cents * rng.uniform(1.2, 1.8, k)).astype(np.int64)
            bad = base.with_columns(amount=_cents_to_text(pl.lit(pl.Series(other))))
            slot = rng.integers(base_rows + 1, n + 1)  # after the original: first one wins
        elif kind == "unknown_customer":
            strangers = _codes("C", np.arange(n_customers + 1, n_customers + 1 + k), 7)
            bad = base.with_columns(invoice_id=new_ids, customer_id=strangers)
            column[:] = "customer_id"
        elif kind == "due_before_issue":
            due = ledger.issue[base_rows] - rng.integers(1, 31, k)
            bad = base.with_columns(
                invoice_id=new_ids, due_date=_as_date(due).dt.to_string("%Y-%m-%d")
            )
            column[:] = "due_date"
        elif kind == "unknown_currency":
            bad = base.with_columns(invoice_id=new_ids, currency=pl.lit("XYZ"))
            column[:] = "currency"
        else:  # pragma: no cover - kinds are validated by the caller
            raise ValueError(kind)
        parts.append(bad)
        slots.append(slot)
        columns.append(column)
        reasons.extend([kind] * k)
    merged, rows = _interleave(text, pl.concat(parts), np.concatenate(slots))
    log = pl.DataFrame(
        {
            "line_number": rows + 2,
            "column": np.concatenate(columns).astype(str),
            "reason": reasons,
        }
    )
    return merged, log


def _payment_faults(
    rng: np.random.Generator, payments: pl.DataFrame, ledger: _Ledger, rate: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add payments several times larger than the invoice they settle."""
    n = payments.height
    k = max(1, round(rate * n))
    base_rows = np.sort(rng.choice(n, size=k, replace=k > n))
    invoice_cents = np.abs(ledger.cents[ledger.pay_invoice[base_rows]])
    too_much = np.round(invoice_cents * rng.uniform(3.0, 10.0, k)) / 100.0
    bad = payments.gather(base_rows).with_columns(
        payment_id=_codes("PAY", np.arange(n + 1, n + 1 + k), 9),
        amount=pl.Series(too_much),
    )
    merged, rows = _interleave(payments, bad, rng.integers(0, n + 1, k))
    log = pl.DataFrame(
        {
            "line_number": rows + 2,
            "column": ["amount"] * k,
            "reason": ["payment_exceeds_invoice"] * k,
        }
    )
    return merged, log


# --- entry point ---------------------------------------------------------------------------------


def generate_demo_data(
    out_dir: Path,
    customers: int = 5000,
    seed: int = 42,
    *,
    start_date: date = date(2023, 1, 1),
    end_date: date = date(2025, 12, 31),
    params: TrueParameters = TrueParameters(),  # frozen, so a safe default
    file_format: str = "csv",
    include: frozenset[str] | None = None,
    faults: Sequence[str] = (),
    fault_rate: float = 0.01,
    engagement_signal: bool = True,
    regime: str = "default",
) -> GenerationSummary:
    """Write a demo inbox under ``out_dir`` plus ``truth/`` with the latents that made it.

    Files: ``<group>.<file_format>`` for each group in ``include`` (default all of
    ``FILE_GROUPS``), plus ``truth/parameters.json``, ``truth/customers.parquet`` and, when
    faults are asked for, ``truth/faults.csv``. The same seed gives byte-identical files, and a
    group's rows do not depend on which other groups or faults were asked for.

    Faulty rows are only ever ADDED, at random places (a duplicate key always after the row it
    repeats, so "first one wins" keeps the good row); good rows are never altered or removed, so
    dropping exactly the lines in ``truth/faults.csv`` gives the clean file. ``line_number``
    counts file lines with the header as line 1 (data row i, 0-based, is line i + 2; the same
    numbering is used for Parquet). With invoice faults every invoice column is text, in
    Parquet too, because "31/02/2024" cannot sit in a date column. Counts in the summary are
    clean rows written (0 for groups not written); fault rows are counted in ``faults``.

    ``regime`` (one of ``REGIMES``) bends the ledger into a case that breaks naive models:
    ``short_history`` moves start_date to 5 months before end_date, ``few_delinquent`` makes
    severe delays rare, ``no_payments`` and ``no_crm_activity`` leave that file group out. The
    regime and its settings are written to ``truth/parameters.json``.
    """
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', not {file_format!r}")
    groups = frozenset(FILE_GROUPS) if include is None else frozenset(include)
    unknown_groups = groups - set(FILE_GROUPS)
    if unknown_groups:
        raise ValueError(f"unknown file groups {sorted(unknown_groups)}; known: {FILE_GROUPS}")
    unknown_faults = set(faults) - set(FAULT_KINDS)
    if unknown_faults:
        raise ValueError(f"unknown fault kinds {sorted(unknown_faults)}; known: {FAULT_KINDS}")
    if customers < 1 or end_date <= start_date:
        raise ValueError("need at least one customer and start_date before end_date")
    if regime not in _REGIMES:
        raise ValueError(f"unknown regime {regime!r}; known: {REGIMES}")
    setting = _REGIMES[regime]
    groups -= setting.without
    if setting.history_months is not None:
        start_date = max(start_date, _months_before(end_date, setting.history_months))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, end = _day_number(start_date), _day_number(end_date)
    streams = [
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(10)
    ]  # one per part: skipping a file never shifts another file's draws
    pop = _draw_population(streams[0], customers, start, end, params)
    buys = _draw_purchases(streams[1], pop, end)
    failed = _distress_before_failure(streams[9], pop, buys.dropout_day, setting.failing_share)
    ledger = _draw_ledger(streams[2], pop, buys, params, end, setting)
    ids = _codes("C", np.arange(1, customers + 1), 7)
    mean_spend = params.p / pop.nu
    dropout = buys.dropout_day

    files: dict[str, Path] = {}
    fault_logs: list[pl.DataFrame] = []
    fault_counts = dict.fromkeys(faults, 0)
    counts = dict.fromkeys(["invoices", "payments", "credit_reports", "activities"], 0)

    if "crm/accounts" in groups:
        accounts = _accounts(streams[3], pop, ids, dropout, end)
        files["crm/accounts"] = _write(accounts, out_dir, "crm/accounts", file_format)
    if "crm/contacts" in groups:
        contacts = _contacts(streams[4], pop, ids, end)
        files["crm/contacts"] = _write(contacts, out_dir, "crm/contacts", file_format)
    if "crm/activities" in groups:
        activities = _activities(streams[5], pop, ids, dropout, end, engagement_signal)
        counts["activities"] = activities.height
        files["crm/activities"] = _write(activities, out_dir, "crm/activities", file_format)
    if "crm/opportunities" in groups:
        opportunities = _opportunities(streams[6], pop, ids, mean_spend, dropout, end)
        files["crm/opportunities"] = _write(
            opportunities, out_dir, "crm/opportunities", file_format
        )
    if "credit/reports" in groups:
        reports = _credit_reports(streams[7], pop, _tax_ids(customers), mean_spend, end)
        counts["credit_reports"] = reports.height
        files["credit/reports"] = _write(reports, out_dir, "credit/reports", file_format)

    fault_rng = streams[8]
    if "invoices/invoices" in groups:
        invoices = pl.DataFrame(
            {
                "invoice_id": _codes("INV", np.arange(1, len(ledger.cents) + 1), 9),
                "customer_id": ids.gather(ledger.customer),
                "issue_date": _as_date(ledger.issue),
                "due_date": _as_date(ledger.due),
                "amount": ledger.cents / 100.0,
                "currency": np.full(len(ledger.cents), _CURRENCY),
                "document_type": np.where(ledger.is_credit, "credit_note", "invoice"),
            }
        )
        counts["invoices"] = invoices.height
        kinds = [k for k in FAULT_KINDS if k in set(faults) & _INVOICE_FAULTS]
        name = f"invoices/invoices.{file_format}"
        if kinds:
            text = _invoices_as_text(invoices, ledger.cents)
            invoices, log = _invoice_faults(fault_rng, text, ledger, kinds, fault_rate, customers)
            fault_logs.append(log.with_columns(file=pl.lit(name)))
        files["invoices/invoices"] = _write(invoices, out_dir, "invoices/invoices", file_format)
    if "invoices/payments" in groups:
        payments = pl.DataFrame(
            {
                "payment_id": _codes("PAY", np.arange(1, len(ledger.pay_cents) + 1), 9),
                "invoice_id": _codes("INV", ledger.pay_invoice + 1, 9),
                "payment_date": _as_date(ledger.pay_day),
                "amount": ledger.pay_cents / 100.0,
                "currency": np.full(len(ledger.pay_cents), _CURRENCY),
            }
        )
        counts["payments"] = payments.height
        if "payment_exceeds_invoice" in faults:
            payments, log = _payment_faults(fault_rng, payments, ledger, fault_rate)
            name = f"invoices/payments.{file_format}"
            fault_logs.append(log.with_columns(file=pl.lit(name)))
        files["invoices/payments"] = _write(payments, out_dir, "invoices/payments", file_format)

    files.update(
        _write_truth(
            out_dir, pop, buys, failed, ids, mean_spend, params, seed, start_date, end_date, regime
        )
    )
    if faults:
        log = (
            pl.concat(fault_logs)
            if fault_logs
            else pl.DataFrame(
                schema={"line_number": pl.Int64, "column": pl.String, "reason": pl.String}
            ).with_columns(file=pl.lit("", dtype=pl.String))
        )
        log = log.select("file", "line_number", "column", "reason").sort("file", "line_number")
        for kind, n in log.group_by("reason").len().iter_rows():
            fault_counts[kind] = n
        path = out_dir / "truth" / "faults.csv"
        log.write_csv(path)
        files["truth/faults"] = path

    return GenerationSummary(
        out_dir=out_dir,
        customers=customers,
        invoices=counts["invoices"],
        payments=counts["payments"],
        credit_reports=counts["credit_reports"],
        activities=counts["activities"],
        start_date=start_date,
        end_date=end_date,
        files=files,
        faults=fault_counts,
        regime=regime,
    )


def _months_before(end_date: date, months: int) -> date:
    """First day of the month that opens the last ``months`` calendar months up to end_date."""
    index = end_date.year * 12 + end_date.month - 1 - (months - 1)
    return date(index // 12, index % 12 + 1, 1)


def _write_truth(
    out_dir: Path,
    pop: _Population,
    buys: _Purchases,
    failed: np.ndarray,
    ids: pl.Series,
    mean_spend: np.ndarray,
    params: TrueParameters,
    seed: int,
    start_date: date,
    end_date: date,
    regime: str,
) -> dict[str, Path]:
    """Ground truth the models are graded against; never read by the pipeline itself."""
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    alive = buys.dropout_day < 0
    customers = pl.DataFrame(
        {
            "customer_id": ids,
            "birth_date": _as_date(pop.birth),
            "purchase_rate_per_week": pop.lam,
            "dropout_probability": pop.dropout_p,
            "dropout_date": _as_date(buys.dropout_day),
            "alive_at_end": alive,
            "mean_spend": mean_spend,
            "payment_discipline": pop.discipline,
            "distress_at_end": pop.distress[:, -1].astype(np.float64),
            "has_bureau_coverage": pop.covered,
            "failed": failed,
        }
    ).with_columns(
        dropout_date=pl.when(pl.col("alive_at_end")).then(None).otherwise("dropout_date")
    )
    customers_path = truth_dir / "customers.parquet"
    customers.write_parquet(customers_path, statistics=False)
    setting = asdict(_REGIMES[regime])
    setting["without"] = sorted(setting["without"])
    meta = {
        "parameters": asdict(params),
        "time_unit_days": TIME_UNIT_DAYS,
        "seed": seed,
        "start_date": start_date.isoformat(),
        "end_date": end_date.isoformat(),
        "customers": len(pop.birth),
        "model": "BG/NBD purchases (dropout only after repeat purchases, one invoice per "
        "customer-day) and Gamma-Gamma spend: amount ~ Gamma(shape=p, rate=nu_i), "
        "nu_i ~ Gamma(shape=q, rate=v), as in lifetimes' GammaGammaFitter",
        "latents": _TRUTH_DESCRIPTION,
        "regime": {"name": regime, **setting},
        "calibration": {
            "customers_over_30_days_past_due_in_a_year": "about 9% of active customers",
            "rating_classes_changing_per_month": "2-5%",
            "open_receivables_over_90_days_past_due": "a small minority (under 15%)",
        },
    }
    parameters_path = truth_dir / "parameters.json"
    parameters_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {"truth/customers": customers_path, "truth/parameters": parameters_path}
