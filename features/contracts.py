"""Data contracts: the one declaration of every input file group.

The loader, the staging SQL, the validation suites and the README's input table all read
these objects, so a column added here is added everywhere.
"""

from __future__ import annotations

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
    description: str = ""


@dataclass(frozen=True)
class Contract:
    """One file group: where its files live in the inbox, its columns and its key."""

    group: str  # e.g. "invoices/invoices": files whose inbox path starts with this
    table: str  # staging table name
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    required_source: bool = False
    description: str = ""
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


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
            Column("amount", "decimal", required=True, minimum=0),
            Column("currency"),
        ),
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
            Column("legal_events", "integer"),
        ),
    ),
)

CONTRACTS_BY_TABLE: dict[str, Contract] = {c.table: c for c in CONTRACTS}
