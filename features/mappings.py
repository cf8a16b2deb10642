"""Vendor mappings: TOML files that translate a real export into a contract's canonical columns.

A mapping names the file group it feeds, the inbox paths it applies to (a glob on the path
relative to the inbox), how its CSV is written (delimiter, decimal mark, date format, encoding)
and how its headers and vocabulary translate. Mappings ship in ``features/mappings/``; a user
adds one by dropping a ``.toml`` file in ``<inbox>/mappings/`` (or the ``[ingest]
mappings_dir``). A user mapping with the same name as a shipped one replaces it.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from features.contracts import CONTRACTS, date_format_parts

SHIPPED_MAPPINGS_DIR = Path(__file__).parent / "mappings"
INBOX_MAPPINGS_FOLDER = "mappings"
_KNOWN_KEYS = {
    "name", "group", "pattern", "delimiter", "decimal", "date_format", "encoding", "sheet",
    "columns", "values", "description",
}  # fmt: skip


class MappingError(ValueError):
    """A mapping file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Mapping:
    name: str
    group: str
    patterns: tuple[str, ...]
    delimiter: str | None = None  # None: sniffed from the header line
    decimal: str = "."
    date_format: str | None = None  # strptime format; None: ISO YYYY-MM-DD
    encoding: str = "utf-8"
    sheet: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # export header -> canonical column
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> {export: ours}
    source: str = "built-in"

    def matches(self, relative_path: str) -> bool:
        path = relative_path.lower()
        return any(fnmatch.fnmatchcase(path, pattern.lower()) for pattern in self.patterns)


def canonical_mapping(group: str) -> Mapping:
    """Files named after their group with canonical headers: ISO dates, dot decimals."""
    return Mapping(name="canonical", group=group, patterns=(f"{group}*",))


def parse_mapping(data: dict, source: str) -> Mapping:
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise MappingError(f"{source}: unknown key(s) {unknown}; known: {sorted(_KNOWN_KEYS)}")
    groups = {c.group: c for c in CONTRACTS}
    for key in ("name", "group", "pattern"):
        if key not in data:
            raise MappingError(f"{source}: missing key '{key}'")
    group = data["group"]
    if group not in groups:
        raise MappingError(f"{source}: unknown group '{group}'; known: {sorted(groups)}")
    columns = {str(k).strip().lower(): v for k, v in data.get("columns", {}).items()}
    wrong = sorted(set(columns.values()) - set(groups[group].column_names))
    if wrong:
        raise MappingError(
            f"{source}: columns map to {wrong}, which are not columns of {group} "
            f"({', '.join(groups[group].column_names)})"
        )
    values = {
        column: {str(k).strip().lower(): str(v) for k, v in table.items()}
        for column, table in data.get("values", {}).items()
    }
    wrong = sorted(set(values) - set(groups[group].column_names))
    if wrong:
        raise MappingError(f"{source}: [values] for {wrong}, which are not columns of {group}")
    decimal = data.get("decimal", ".")
    if decimal not in (".", ","):
        raise MappingError(f"{source}: decimal must be '.' or ',', not {decimal!r}")
    if data.get("date_format") is not None:
        try:
            date_format_parts(data["date_format"])
        except ValueError as error:
            raise MappingError(f"{source}: {error}") from error
    patterns = data["pattern"]
    return Mapping(
        name=data["name"],
        group=group,
        patterns=(patterns,) if isinstance(patterns, str) else tuple(patterns),
        delimiter=data.get("delimiter"),
        decimal=decimal,
        date_format=data.get("date_format"),
        encoding=data.get("encoding", "utf-8"),
        sheet=data.get("sheet"),
        columns=columns,
        values=values,
        source=source,
    )


def load_mappings(*folders: Path | None) -> list[Mapping]:
    """Shipped mappings, then each folder's; a later mapping of the same name replaces one."""
    by_name: dict[str, Mapping] = {}
    for folder in (SHIPPED_MAPPINGS_DIR, *folders):
        if folder is None or not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).glob("*.toml")):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as error:
                raise MappingError(f"{path}: not valid TOML: {error}") from error
            mapping = parse_mapping(data, str(path))
            by_name[mapping.name] = mapping
    return list(by_name.values())
