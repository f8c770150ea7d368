-- Alerts (spancost.alerts): what was told, to whom, when. Idempotent; applied by
-- db.apply_schema after schema.sql.

-- One row per anomaly or budget status change, keyed so that the same one is never
-- recorded twice: delivery is tracked per channel, and a channel sends a row only
-- while its delivered_at is null, so a failed delivery is retried on the next run.
-- sendable is false for what was already older than alert_lookback_hours when it
-- was recorded (a backfill's anomalies): recorded, never sent.
create table if not exists ops.alerts (
    alert_key               text        primary key,
    kind                    text        not null check (kind in ('anomaly', 'budget')),
    payload                 jsonb       not null,
    period_start            timestamptz,
    sendable                boolean     not null,
    created_at              timestamptz not null default now(),
    log_delivered_at        timestamptz,
    webhook_delivered_at    timestamptz,
    webhook_attempts        integer     not null default 0,
    webhook_last_error      text,
    slack_delivered_at      timestamptz,
    slack_attempts          integer     not null default 0,
    slack_last_error        text
);
create index if not exists alerts_created_idx on ops.alerts (created_at);

-- The last status told per budget; a budget starts as ok.
create table if not exists ops.budget_states (
    budget_id       text        primary key,
    status          text        not null check (status in ('ok', 'warn', 'breach')),
    changed_at      timestamptz not null
);
