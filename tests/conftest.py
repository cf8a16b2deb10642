"""Shared fixtures: small generated inboxes, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic import generate_demo_data

SMALL_CUSTOMERS = 1500


@pytest.fixture(scope="session")
def demo_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete inbox (CRM, invoices, payments, bureau) with known truth."""
    inbox = tmp_path_factory.mktemp("inbox")
    generate_demo_data(inbox, customers=SMALL_CUSTOMERS, seed=7)
    return inbox


@pytest.fixture(scope="session")
def invoices_only_inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the indispensable source: invoice exports."""
    inbox = tmp_path_factory.mktemp("invoices_only")
    generate_demo_data(
        inbox, customers=SMALL_CUSTOMERS, seed=7, include=frozenset({"invoices/invoices"})
    )
    return inbox


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.lstrip())
    return path
