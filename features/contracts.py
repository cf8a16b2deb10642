"""Data contracts: the one declaration of every input file group.

The loader, the staging SQL, the validation suites and the README's input table all read
these objects, so a column added here is added everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["string", "date", "decimal", "number", "integer", "boolean"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = "string"
    required: bool = False
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    # Reason recorded when the value is outside [minimum, maximum].
    range_reason: str = "out_of_range"
    description: str = ""


@dataclass(frozen=True)
class RowRule:
    """A rule across columns of one row: ``condition`` (DuckDB SQL over the typed columns,
    the base-currency amount ``amount_base`` and the referenced tables by name) is true for a
    bad row."""

    reason: str
    condition: str
    needs: tuple[str, ...] = ()  # staging tables the condition reads; no rows there = skipped
    description: str = ""


@dataclass(frozen=True)
class Reference:
    """``column`` must name a row of ``staging.<table>`` (its column ``key``)."""

    column: str
    table: str
    key: str
    reason: str


@dataclass(frozen=True)
class Money:
    """An amount with its currency, converted to the base currency at the rate of ``date``."""

    amount: str = "amount"
    currency: str = "currency"
    date: str = "issue_date"


@dataclass(frozen=True)
class Contract:
    """One file group: where its files live in the inbox, its columns and its key."""

    group: str  # e.g. "invoices/invoices": files whose inbox path starts with this
    table: str  # staging table name
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    required_source: bool = False
    description: str = ""
    rules: tuple[RowRule, ...] = ()
    references: tuple[Reference, ...] = ()
    money: Money | None = None
    # Absence is the normal case (e.g. no FX file when every amount is in the base currency):
    # say so quietly; the rows that would need it are quarantined and warned about instead.
    quiet_when_absent: bool = False
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Staging tables this group's rules read (they must be built first)."""
        tables = [r.table for r in self.references] + [t for r in self.rules for t in r.needs]
        if self.money is not None:
            tables.append("fx_rates")
        return tuple(dict.fromkeys(t for t in tables if t != self.table))


CONTRACTS: tuple[Contract, ...] = (
    Contract(
        group="crm/accounts",
        table="accounts",
        key=("customer_id",),
        description="Customer accounts (companies) from the CRM.",
        columns=(
            Column("customer_id", required=True),
            Column("name"),
            Column("tax_id", required=True, description="Joins the bureau's credit reports."),
            Column("country"),
            Column("region"),
            Column("sector"),
            Column("size_band"),
            Column("created_at", "date"),
            Column("status", allowed=("active", "closed", "prospect")),
        ),
    ),
    Contract(
        group="crm/contacts",
        table="contacts",
        key=("contact_id",),
        description="People at customer accounts, with their marketing consent.",
        columns=(
            Column("contact_id", required=True),
            Column("customer_id", required=True),
            Column("first_name"),
            Column("last_name"),
            Column("email"),
            Column("phone"),
            Column("role"),
            Column("marketing_consent", "boolean", required=True),
            Column("consent_updated_at", "date"),
        ),
    ),
    Contract(
        group="crm/activities",
        table="activities",
        key=("activity_id",),
        description="Calls, e-mails, meetings and support tickets logged in the CRM.",
        columns=(
            Column("activity_id", required=True),
            Column("customer_id", required=True),
            Column("type", allowed=("call", "email", "meeting", "ticket")),
            Column("occurred_at", "date", required=True),
        ),
    ),
    Contract(
        group="crm/opportunities",
        table="opportunities",
        key=("opportunity_id",),
        description="Sales opportunities and their outcome.",
        columns=(
            Column("opportunity_id", required=True),
            Column("customer_id", required=True),
            Column("stage"),
            Column("amount", "decimal"),
            Column("currency"),
            Column("created_at", "date"),
            Column("closed_at", "date"),
            Column("won", "boolean"),
        ),
        money=Money(date="created_at"),
    ),
    Contract(
        group="invoices/invoices",
        table="invoices",
        key=("invoice_id",),
        required_source=True,
        description="Invoices and credit notes from accounting; credit notes are stored negative.",
        columns=(
            Column("invoice_id", required=True),
            Column("customer_id", required=True),
            Column("issue_date", "date", required=True),
            Column("due_date", "date"),
            Column("amount", "decimal", required=True),
            Column("currency"),
            Column("document_type", allowed=("invoice", "credit_note")),
        ),
        rules=(
            RowRule(
                "negative_amount",
                "coalesce(document_type, 'invoice') = 'invoice' and amount < 0",
                description="an invoice (not a credit note) with a negative amount",
            ),
            RowRule("due_before_issue", "due_date < issue_date", description="due before issued"),
        ),
        references=(Reference("customer_id", "accounts", "customer_id", "unknown_customer"),),
        money=Money(date="issue_date"),
    ),
    Contract(
        group="invoices/payments",
        table="payments",
        key=("payment_id",),
        description="Payments received against invoices.",
        columns=(
            Column("payment_id", required=True),
            Column("invoice_id", required=True),
            Column("payment_date", "date", required=True),
            Column("amount", "decimal", required=True, minimum=0, range_reason="negative_amount"),
            Column("currency"),
        ),
        references=(Reference("invoice_id", "invoices", "invoice_id", "unknown_invoice"),),
        rules=(
            RowRule(
                "payment_exceeds_invoice",
                # both sides in base currency; a cent and 0.5% of slack for FX rounding
                "amount_base > abs(invoices.amount) * 1.005 + 0.01",
                needs=("invoices",),
                description="a payment larger than the whole invoice it settles",
            ),
        ),
        money=Money(date="payment_date"),
    ),
    Contract(
        group="credit/reports",
        table="credit_reports",
        key=("tax_id", "report_date"),
        description="Business-credit bureau reports (ratings, scores, limits), usually monthly.",
        columns=(
            Column("tax_id", required=True),
            Column("report_date", "date", required=True),
            Column("rating_class"),
            Column("failure_score", "number", description="1-100, lower is riskier."),
            Column("delinquency_score", "number", description="1-100, lower is riskier."),
            Column("credit_limit", "decimal"),
            Column("legal_events", "integer", minimum=0),
        ),
    ),
    Contract(
        group="fx/rates",
        table="fx_rates",
        key=("rate_date", "currency"),
        quiet_when_absent=True,
        description="Exchange rates: one unit of `currency` is worth `rate` of the base currency.",
        columns=(
            Column("rate_date", "date", required=True),
            Column("currency", required=True),
            Column("rate", "number", required=True, minimum=1e-9),
        ),
    ),
)

CONTRACTS_BY_TABLE: dict[str, Contract] = {c.table: c for c in CONTRACTS}


# Every reason a row can be quarantined for, in the words of ``quarantine.rejected_rows``.
REJECT_REASONS: dict[str, str] = {
    "missing_required": "a required value is empty",
    "bad_date": "no calendar date: not YYYY-MM-DD or YYYY/MM/DD (a time of day after it is "
    "dropped), or not in the mapping's date_format",
    "bad_number": "no plain number in the file's decimal mark (digits, a decimal mark, an "
    "exponent; not NaN, infinity, digit separators or hex), or a fraction in an integer column",
    "bad_boolean": "a yes/no value that is not one of true/false/yes/no/1/0 (or mapped)",
    "not_allowed": "a value outside the column's allowed set",
    "negative_amount": "a negative amount where only positive ones make sense",
    "out_of_range": "a number outside the column's range",
    "due_before_issue": "an invoice due before it was issued",
    "unknown_customer": "an invoice for a customer_id that is not in crm/accounts",
    "unknown_invoice": "a payment for an invoice_id that is not in staging.invoices",
    "payment_exceeds_invoice": "a payment larger than the whole invoice it settles",
    "unknown_currency": "an amount in a currency with no FX rate on or before its date",
    "duplicate_key": "the key appears again later in the same file (the first line stands)",
}


def _column_markdown(column: Column) -> str:
    name = f"**{column.name}**" if column.required else column.name
    if column.allowed:
        name += f" ({'/'.join(column.allowed)})"
    return name


def inputs_markdown() -> str:
    """The README's input table, generated from the contracts (a test keeps them in sync)."""
    lines = ["| file group | canonical columns (required in bold) |", "|---|---|"]
    for contract in CONTRACTS:
        columns = ", ".join(_column_markdown(c) for c in contract.columns)
        lines.append(f"| `{contract.group}*` | {columns} |")
    return "\n".join(lines)


def reasons_markdown() -> str:
    """The README's table of quarantine reasons."""
    lines = ["| reason | the row has |", "|---|---|"]
    lines += [f"| `{reason}` | {text} |" for reason, text in REJECT_REASONS.items()]
    return "\n".join(lines)


# --- SQL that types raw text rows by a contract and lists their problems ----------------------

_SQL_TYPES = {
    "string": "varchar",
    "date": "date",
    "decimal": "decimal(18, 2)",
    "number": "double",
    "integer": "bigint",
    "boolean": "boolean",
}
_TRUE = "('true', 't', '1', 'yes', 'y')"
_FALSE = "('false', 'f', '0', 'no', 'n')"
# A comma-decimal number: optional dot thousands separators, then an optional comma fraction.
_COMMA_NUMBER = r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?\z"
# What a value must look like before it is converted, the same on every engine. A cast alone takes
# whatever its engine happens to parse (DuckDB: 'nan', 'inf', '1_000', hex, '1.5' rounded into an
# integer column, a year before Christ; Spark: '2024' as a date): values no export means would
# pass, and differ between engines. Anchored at both ends with \z: Java's $ lets a final line
# break through.
_NUMBER_TEXT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\z"
_INTEGER_TEXT = r"^[+-]?\d+(\.0*)?\z"
# ISO dates (or with slashes), optionally with a time of day and zone, which is dropped
_DATE_TEXT = (
    r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?\z"
)
_DATE_PART = r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}"
# What a mapping's date_format may use, each directive with the text it takes and its Java
# pattern letter (Spark): day, month, hour, minute and second in one or two digits (exactly two
# when another number follows or precedes without a separator), the year in four, a month's
# English abbreviation. The text must match before it is parsed, so neither engine's leniency
# decides (DuckDB reads the year '24' as the year 24).
DATE_DIRECTIVES: dict[str, tuple[str, str]] = {
    "%d": (r"\d", "d"),
    "%m": (r"\d", "M"),
    "%H": (r"\d", "H"),
    "%M": (r"\d", "m"),
    "%S": (r"\d", "s"),
    "%Y": (r"\d{4}", "yyyy"),
    "%b": ("(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)", "MMM"),
}
_LARGEST_DOUBLE = "1.7976931348623157e308"


def sql_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def date_format_parts(date_format: str) -> tuple[str, str]:
    """A mapping's strftime-style ``date_format`` as the regular expression a value must match
    and the equivalent Java pattern (Spark's parser); ``ValueError`` names a directive outside
    ``DATE_DIRECTIVES``."""
    tokens = re.findall(r"%.|[^%]", date_format)
    numeric = [t in DATE_DIRECTIVES and t != "%b" for t in tokens]
    regex, java = ["^"], []
    for i, token in enumerate(tokens):
        if token.startswith("%") and token not in DATE_DIRECTIVES:
            known = ", ".join(DATE_DIRECTIVES)
            raise ValueError(f"date_format {date_format!r}: {token} is not one of {known}")
        if token not in DATE_DIRECTIVES:
            regex.append(re.escape(token))
            java.append(token if not token.isalpha() else f"'{token}'")
            continue
        text, letter = DATE_DIRECTIVES[token]
        if text == r"\d":  # one or two digits, unless a neighbouring number leaves no room
            adjacent = (i > 0 and numeric[i - 1]) or (i + 1 < len(tokens) and numeric[i + 1])
            text, letter = (r"\d{2}", letter * 2) if adjacent else (r"\d{1,2}", letter)
        regex.append(text)
        java.append(letter)
    return "".join(regex) + r"\z", "".join(java)


def typed_expression(
    column: Column, decimal: str = ".", date_format: str | None = None, sql_type: str | None = None
) -> str:
    """The typed value of a raw text column: NULL when it is empty or not of the column's type
    (``_NUMBER_TEXT``, ``_INTEGER_TEXT``, ``_DATE_TEXT``; a mapping's ``date_format``)."""
    text = f"nullif(trim({column.name}), '')"
    if column.type == "string":
        return f"lower({text})" if column.allowed else text
    if column.type == "boolean":
        return (
            f"case when lower({text}) in {_TRUE} then true "
            f"when lower({text}) in {_FALSE} then false end"
        )
    if column.type == "date" and date_format:
        form, _ = date_format_parts(date_format)
        return (
            f"case when regexp_matches({text}, {sql_quote(form)}) "
            f"then try_strptime({text}, {sql_quote(date_format)})::date end"
        )
    if column.type == "date":
        day = f"replace(regexp_extract({text}, {sql_quote(_DATE_PART)}, 0), '/', '-')"
        return (
            f"case when regexp_matches({text}, {sql_quote(_DATE_TEXT)}) "
            f"then try_cast({day} as date) end"
        )
    if decimal == ",":
        text = (
            f"case when regexp_matches({text}, {sql_quote(_COMMA_NUMBER)}) then "
            f"replace(replace({text}, '.', ''), ',', '.') end"
        )
    grammar, digits = _NUMBER_TEXT, text
    if column.type == "integer":  # '3.0' is 3: the digits before the point
        grammar, digits = _INTEGER_TEXT, f"regexp_extract({text}, '^[+-]?[0-9]+', 0)"
    value = (
        f"case when regexp_matches({text}, {sql_quote(grammar)}) "
        f"then try_cast({digits} as {sql_type or _SQL_TYPES[column.type]}) end"
    )
    if column.type == "number":  # '1e400' is a number too large for a double: not infinity
        return f"case when abs({value}) <= {_LARGEST_DOUBLE} then {value} end"
    return value


def _problem_expressions(column: Column, decimal: str, date_format: str | None) -> list[str]:
    """SQL expressions yielding 'reason:column' when the raw value breaks the contract."""
    text = f"nullif(trim({column.name}), '')"
    typed = typed_expression(column, decimal, date_format)
    problems = []
    if column.required:
        problems.append(f"case when {text} is null then 'missing_required:{column.name}' end")
    bad_kind = {"date": "bad_date", "boolean": "bad_boolean"}.get(column.type, "bad_number")
    if column.type != "string":
        problems.append(
            f"case when {text} is not null and {typed} is null then '{bad_kind}:{column.name}' end"
        )
    if column.allowed:
        allowed = ", ".join(sql_quote(value) for value in column.allowed)
        problems.append(
            f"case when {text} is not null and {typed} not in ({allowed}) "
            f"then 'not_allowed:{column.name}' end"
        )
    bounds = [f"{typed} < {column.minimum}"] if column.minimum is not None else []
    bounds += [f"{typed} > {column.maximum}"] if column.maximum is not None else []
    if bounds:
        problems.append(
            f"case when {' or '.join(bounds)} then '{column.range_reason}:{column.name}' end"
        )
    return problems


def typed_select(
    contract: Contract,
    source: str,
    decimal: str = ".",
    date_format: str | None = None,
    checks: bool = True,
) -> str:
    """SELECT over raw rows: typed canonical columns plus the list of contract problems.

    Typing and checking are one pass over the rows. ``checks=False`` types the same way and
    leaves the list empty (the unvalidated baseline the ingestion bench compares with).
    """
    typed = ",\n    ".join(
        f"{typed_expression(c, decimal, date_format)} as {c.name}" for c in contract.columns
    )
    problems = ",\n        ".join(
        p for c in contract.columns for p in _problem_expressions(c, decimal, date_format)
    )
    problem_list = (
        f"list_filter([\n        {problems}\n    ], lambda problem: problem is not null)"
        if checks
        else "[]::varchar[]"
    )
    return f"""
select
    load_id,
    source_file,
    line_number,
    {typed},
    {problem_list} as problems
from {source}"""
