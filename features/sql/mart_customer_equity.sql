-- Customer equity as of $as_of: the sum of CLV (over the next clv_horizon_days) over the customer
-- base, gross and net of expected credit loss (risk_adjusted_clv), with the loss expected on
-- today's receivables.
-- When the receivables are unknown (finance_unknown_reason from marts.finance_status: no payment
-- known by $as_of) so is everything net of credit loss: NULL, never the gross figure again.
with clv as (
    select customer_id, clv, clv_horizon_days from models.clv_scores
),

risk as (
    select customer_id, open_exposure, expected_loss, risk_adjusted_clv from marts.customer_risk
),

status as (
    select finance_unknown_reason from marts.finance_status
),

totals as (
    select
        count(*) filter (where clv.clv is not null) as customers_with_clv,
        max(clv.clv_horizon_days) as clv_horizon_days,
        coalesce(sum(clv.clv), 0) as customer_equity_gross,
        coalesce(sum(coalesce(r.risk_adjusted_clv, clv.clv)), 0) as customer_equity_net,
        coalesce(sum(r.open_exposure), 0)::decimal(18, 2) as open_exposure,
        coalesce(sum(r.expected_loss), 0) as expected_loss_on_receivables
    from clv
    full outer join risk as r using (customer_id)
),

final as (
    select
        $as_of::date as as_of_date,
        t.customers_with_clv,
        t.clv_horizon_days,
        t.customer_equity_gross,
        case when s.finance_unknown_reason is null then t.customer_equity_net end
            as customer_equity_net,
        case when s.finance_unknown_reason is null then
            t.customer_equity_gross - t.customer_equity_net
        end as expected_credit_loss_on_equity,
        case when s.finance_unknown_reason is null then t.open_exposure end as open_exposure,
        case when s.finance_unknown_reason is null then t.expected_loss_on_receivables end
            as expected_loss_on_receivables,
        s.finance_unknown_reason
    from totals as t
    cross join status as s
)

select * from final
