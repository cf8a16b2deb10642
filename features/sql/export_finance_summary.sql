-- The finance workbook's Summary: the portfolio's headline figures (marts.portfolio_risk's
-- portfolio row) as of the snapshot's as-of date, as of the previous as-of date kept in the
-- history (/*history*/: marts.portfolio_risk_history, or an empty table when the snapshot has
-- none) and the change between them. A figure that is unknown (no payments known: the
-- finance_unknown_reason) stays NULL with the reason in the note, never 0; with no earlier
-- as-of date the previous and change rows say so instead of a number.
with portfolio_rows as (
    -- the snapshot's own row first, then the history's rows (which include it)
    select 0 as source, * from marts.portfolio_risk where dimension = 'portfolio'
    union all by name
    select 1 as source, * from /*history*/ where dimension = 'portfolio'
),

figures as (
    select
        source,
        as_of_date,
        customers_with_exposure as customers_with_open_receivables,
        exposure::double as exposure,
        overdue::double as overdue,
        overdue_over_90::double as overdue_over_90,
        expected_loss,
        dso_days,
        finance_unknown_reason
    from portfolio_rows
),

current_figures as (
    select * exclude (source) from figures where source = 0
),

previous_figures as (
    select * exclude (source)
    from figures
    where source = 1 and as_of_date < (select as_of_date from current_figures)
    order by as_of_date desc
    limit 1
),

paired as (
    select
        c.*,
        p.as_of_date as previous_as_of_date,
        p.customers_with_open_receivables as previous_customers_with_open_receivables,
        p.exposure as previous_exposure,
        p.overdue as previous_overdue,
        p.overdue_over_90 as previous_overdue_over_90,
        p.expected_loss as previous_expected_loss,
        p.dso_days as previous_dso_days,
        p.finance_unknown_reason as previous_finance_unknown_reason
    from current_figures as c
    left join previous_figures as p on true
),

no_previous as (
    select 'no as-of date before ' || as_of_date::varchar
        || ' in marts.portfolio_risk_history: no trend yet' as note
    from current_figures
),

final as (
    select
        1 as row_order,
        'as of' as figures,
        as_of_date,
        customers_with_open_receivables,
        exposure,
        overdue,
        overdue_over_90,
        expected_loss,
        dso_days,
        case when finance_unknown_reason is not null then 'unknown: ' || finance_unknown_reason
        end as note
    from paired
    union all
    select
        2,
        'previous as-of date',
        previous_as_of_date,
        previous_customers_with_open_receivables,
        previous_exposure,
        previous_overdue,
        previous_overdue_over_90,
        previous_expected_loss,
        previous_dso_days,
        case
            when previous_as_of_date is null then (select note from no_previous)
            when previous_finance_unknown_reason is not null then
                'unknown: ' || previous_finance_unknown_reason
        end
    from paired
    union all
    select
        3,
        'change',
        null,
        customers_with_open_receivables - previous_customers_with_open_receivables,
        exposure - previous_exposure,
        overdue - previous_overdue,
        overdue_over_90 - previous_overdue_over_90,
        expected_loss - previous_expected_loss,
        dso_days - previous_dso_days,
        case
            when previous_as_of_date is null then (select note from no_previous)
            when finance_unknown_reason is not null or previous_finance_unknown_reason is not null
                then 'unknown: ' || coalesce(finance_unknown_reason, previous_finance_unknown_reason)
            else 'since ' || previous_as_of_date::varchar || ' ('
                || date_diff('day', previous_as_of_date, as_of_date)::varchar || ' days)'
        end
    from paired
)

select * exclude (row_order) from final order by row_order
