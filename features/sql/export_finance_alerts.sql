-- The finance workbook's Alerts: marts.risk_alerts ranked by severity, then open exposure.
select
    alert_rank,
    severity,
    alert_type,
    alert_date,
    customer_id,
    customer_name,
    open_exposure::double as open_exposure,
    credit_limit::double as credit_limit,
    credit_limit_utilisation,
    change,
    previous_value,
    current_value,
    finance_unknown_reason
from marts.risk_alerts
order by alert_rank
