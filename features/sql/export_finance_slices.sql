-- The finance workbook's Portfolio slices: marts.portfolio_risk, one row per dimension value
-- (portfolio, sector, region, RFM segment, delinquency class, bureau rating) with countback DSO
-- per slice, in the mart's order.
select
    dimension,
    dimension_value,
    customers,
    customers_with_exposure,
    exposure::double as exposure,
    share_of_exposure,
    overdue::double as overdue,
    overdue_over_60::double as overdue_over_60,
    overdue_over_90::double as overdue_over_90,
    expected_loss,
    expected_loss_rate,
    exposure_weighted_probability,
    customers_over_credit_limit,
    exposure_over_credit_limit::double as exposure_over_credit_limit,
    top10_exposure_share,
    herfindahl_index,
    dso_days,
    finance_unknown_reason
from marts.portfolio_risk
order by
    case dimension
        when 'portfolio' then 0 when 'sector' then 1 when 'region' then 2
        when 'rfm_segment' then 3 when 'delinquency_class' then 4 else 5
    end,
    exposure desc nulls last,
    dimension_value
