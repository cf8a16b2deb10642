"""Counts in words, shared by the CLI and the messages steps log."""


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """A count with its noun: "1 customer", "2,000 customers", "3 as-of dates"."""
    return f"{count:,} {noun if count == 1 else plural_form or noun + 's'}"
