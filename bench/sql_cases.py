"""How the pipeline runs each SQL file of ``features/sql`` on a warehouse after a nightly run:
its parameters and fragments, for the engine comparison (tests/test_spark_sql.py) and the
engine benchmark (bench/bench_spark_sql.py)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from features.ingest import data_quality_inputs
from features.receivables import countback_fragments
from features.spark_sql import tables_read


def sql_file_cases(as_of: date, churn_cutoffs: list[date], delinquency_cutoffs: list[date]) -> dict:
    """Per file: its parameters and fragments as the pipeline passes them, and which warehouse
    (the working one, or the published snapshot that exports and the report read)."""
    countback = countback_fragments(12)
    quality_params, quality_fragments = data_quality_inputs()
    ledger = {"invoices_table": "staging.invoices", "payments_table": "staging.payments"}
    holdout = as_of - timedelta(days=182)
    churn_history = {"cutoffs": churn_cutoffs, "as_of": as_of, "sample_fraction": 1.0}
    return {
        "export_finance_aging": {"db": "published"},
        "export_finance_alerts": {"db": "published"},
        "export_finance_slices": {"db": "published"},
        "export_finance_summary": {
            "db": "published",
            "fragments": {"history": "marts.portfolio_risk_history"},
        },
        "export_finance_top_exposures": {"db": "published", "params": {"top": 50}},
        "export_segment_contacts": {
            "db": "published",
            "tables": ["do_not_contact_list"],
            "params": {
                "segment": "Champions",
                "exclude_closed": True,
                "exclude_credit_hold": True,
                "exclude_high_churn": False,
            },
        },
        "feat_churn_engagement": {"params": churn_history},
        "feat_churn_purchases": {"params": churn_history},
        "feat_churn_labels": {"params": {"as_of": as_of, "horizon_days": 180}},
        "feat_churn_snapshots": {},
        "feat_churn_training_snapshots": {"tables": ["churn_scoring_snapshot"]},
        "feat_clv_holdout_purchases": {"params": {"cutoff": holdout, "as_of": as_of}},
        "feat_clv_tracking_actuals": {
            "params": {"cutoff": holdout, "as_of": as_of, "time_unit_days": 7.0}
        },
        "feat_credit_note_refunds": {"params": {"as_of": as_of, **ledger}},
        "feat_customer_summary": {"params": {"as_of": as_of}},
        "feat_delinquency_labels": {
            "params": {
                "cutoffs": delinquency_cutoffs,
                "horizon_days": 90,
                "label_days_past_due": 30,
            }
        },
        # a quarter of the customers, drawn by the md5 of their id: the same on both engines
        "feat_ledger_sample_invoices": {"params": {"sample_fraction": 0.25}},
        "feat_ledger_sample_payments": {"tables": ["ledger_sample_invoices"]},
        "feat_invoice_settlement": {
            "params": {
                "as_of": as_of,
                "default_payment_terms_days": 30,
                "settlement_tolerance": 1.0,
                "sample_fraction": 1.0,
                **ledger,
            }
        },
        "feat_payment_behaviour": {
            "params": {
                "cutoff_date": as_of,
                "settlement_table": "features.invoice_settlement",
                "items_table": "features.receivable_items",
                "whole_ledger": True,
                "payments_known": True,
            }
        },
        "feat_receivable_items": {
            "params": {
                "as_of": as_of,
                "default_payment_terms_days": 30,
                "settlement_table": "features.invoice_settlement",
                "refunds_table": "features.credit_note_refunds",
                "invoices_table": "staging.invoices",
                "payments_known": True,
            }
        },
        "feat_receivables_dso": {
            "params": {"as_of": as_of},
            "fragments": {k: countback[k] for k in ("group_sales", "countback_days")},
        },
        "feat_receivables_dso_basis": {
            "params": {"as_of": as_of, "dso_months": 12},
            "fragments": {"monthly_sales": countback["monthly_sales"]},
        },
        "feat_segment_transitions": {},
        "feat_settlement_changed_customers": {
            "params": {
                "as_of": as_of,
                "previous_as_of": as_of - timedelta(days=1),
                "since_load_sequence": 1,
            }
        },
        "mart_customer_360": {"params": {"as_of": as_of}},
        "mart_customer_equity": {"params": {"as_of": as_of}},
        "mart_customer_risk": {"params": {"as_of": as_of, "lgd": 0.45}},
        "mart_portfolio_risk": {
            "params": {"as_of": as_of},
            "fragments": {k: countback[k] for k in ("group_sales", "countback_days")},
        },
        "mart_receivables_aging": {"params": {"as_of": as_of, "finance_unknown_reason": None}},
        "mart_risk_alerts": {
            "params": {
                "as_of": as_of,
                "lookback_days": 31,
                "failure_score_drop": 15,
                "deposits_since": as_of - timedelta(days=30),
            }
        },
        "mart_segment_members": {},
        "mart_segment_migration": {},
        "mart_segment_moves": {},
        "mart_segment_summary": {},
        "report_clv_histogram": {"db": "published", "params": {"bins": 40}},
        "ops_data_quality": {
            "params": {"as_of": as_of, **quality_params},
            "fragments": quality_fragments,
        },
    }


def case_tables(text: str, case: dict[str, Any]) -> set[str]:
    """The tables a file reads in ``case``: those ``tables_read`` finds and the connection's
    own tables the case names."""
    return tables_read(text, case.get("params", {})) | set(case.get("tables", []))
