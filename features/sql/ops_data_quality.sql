-- What the inbox delivered and what became of it, as of $as_of: one row per staging table,
-- source file, outcome and reason, with a row count. Counts only, never a row's content, so the
-- published snapshot (and the HTML report) can show it while raw rows and quarantined content
-- stay in the working warehouse.
--   staged       rows in staging.<table> from that file (a later file may replace earlier rows)
--   quarantined  rows kept out, per reason (quarantine.rejected_rows)
--   superseded   rows of the file replaced by a later delivery of the same ids
--                (delivered = staged + quarantined + superseded)
--   refused      a whole file the reject gate refused; nothing of it was staged
-- $file_groups and $staging_tables pair each contract's file group with its staging table;
-- /*staged_loads*/ is the load_id of every row of those tables (features/ingest.py).
with contracts as (
    select
        unnest($file_groups::varchar[]) as file_group,
        unnest($staging_tables::varchar[]) as staging_table
),

loads as (
    select f.content_hash as load_id, c.staging_table, f.source_file, f.rows as delivered_rows
    from ops.loaded_files as f
    join contracts as c using (file_group)
    where f.outcome = 'loaded'
),

staged as (
    select load_id, count(*) as rows
    from (/*staged_loads*/) as staged_rows
    group by load_id
),

quarantined as (
    select staging_table, source_file, load_id, reason, count(*) as rows
    from quarantine.rejected_rows
    group by all
),

per_load as (
    select
        l.staging_table,
        l.source_file,
        coalesce(s.rows, 0) as staged_rows,
        coalesce(l.delivered_rows, 0)
        - coalesce(s.rows, 0)
        - coalesce((select sum(q.rows) from quarantined as q where q.load_id = l.load_id), 0)
            as superseded_rows
    from loads as l
    left join staged as s using (load_id)
),

counted as (
    select staging_table, source_file, 'staged' as outcome, null::varchar as reason,
        staged_rows as rows
    from per_load
    union all
    select staging_table, source_file, 'superseded', null, superseded_rows
    from per_load
    where superseded_rows > 0
    union all
    select staging_table, source_file, 'quarantined', reason, sum(rows)
    from quarantined
    group by all
    union all
    select c.staging_table, f.source_file, 'refused', null, f.rows
    from ops.loaded_files as f
    join contracts as c using (file_group)
    where f.outcome = 'refused'
)

select
    $as_of::date as as_of_date,
    staging_table,
    source_file,
    outcome,
    reason,
    rows::bigint as rows
from counted
order by staging_table, source_file, outcome, reason
