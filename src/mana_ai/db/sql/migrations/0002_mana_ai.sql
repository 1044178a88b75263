-- The mana_ai schema (SPEC §4.4) plus the additions our design needs (each documented in docs/schema.md).

CREATE SCHEMA IF NOT EXISTS mana_ai;

-- Materialised last-writer-wins views of ai/aiMissions and ai/agents.
-- Addition: `deleted` keeps a tombstone after an op=delete row, so a snapshot never depends on how the
-- rows were split into refresh batches.
CREATE TABLE IF NOT EXISTS mana_ai.mission_snapshots (
    user_id         TEXT NOT NULL,
    mission_id      TEXT NOT NULL,
    record          JSONB NOT NULL,
    last_applied_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted         BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, mission_id)
);
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_due
    ON mana_ai.mission_snapshots ((record->>'state'), (record->>'nextRunAt'))
    WHERE record->>'state' = 'active';
CREATE INDEX IF NOT EXISTS idx_mission_snapshots_user ON mana_ai.mission_snapshots (user_id, last_applied_at);

CREATE TABLE IF NOT EXISTS mana_ai.agent_snapshots (
    user_id         TEXT NOT NULL,
    agent_id        TEXT NOT NULL,
    record          JSONB NOT NULL,
    last_applied_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted         BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, agent_id)
);
CREATE INDEX IF NOT EXISTS idx_agent_snapshots_user ON mana_ai.agent_snapshots (user_id, last_applied_at);
CREATE INDEX IF NOT EXISTS idx_agent_snapshots_state
    ON mana_ai.agent_snapshots ((record->>'state')) WHERE record->>'state' = 'active';

-- Append-only log of server-side decrypt attempts. FORCE (missing in the original, W15) so that even the
-- table owner reads only the rows of app.current_user_id.
CREATE TABLE IF NOT EXISTS mana_ai.decrypt_audit (
    id           BIGSERIAL PRIMARY KEY,
    user_id      TEXT NOT NULL,
    mission_id   TEXT NOT NULL,
    iteration_id TEXT NULL,
    table_name   TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'scope-violation')),
    reason       TEXT NULL,
    ts           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_decrypt_audit_mission ON mana_ai.decrypt_audit (user_id, mission_id, ts DESC);
ALTER TABLE mana_ai.decrypt_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE mana_ai.decrypt_audit FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'mana_ai' AND tablename = 'decrypt_audit'
                   AND policyname = 'decrypt_audit_user_scope') THEN
        CREATE POLICY decrypt_audit_user_scope ON mana_ai.decrypt_audit
            USING (user_id = current_setting('app.current_user_id', true))
            WITH CHECK (user_id = current_setting('app.current_user_id', true));
    END IF;
END
$$;

-- Pending deep-research jobs; presence == pending.
CREATE TABLE IF NOT EXISTS mana_ai.mission_research_jobs (
    user_id        TEXT NOT NULL,
    mission_id     TEXT NOT NULL,
    task_id        TEXT NOT NULL,
    provider_id    TEXT NOT NULL,
    submitted_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_polled_at TIMESTAMPTZ NULL,
    PRIMARY KEY (user_id, mission_id)
);
CREATE INDEX IF NOT EXISTS idx_mission_research_jobs_user
    ON mana_ai.mission_research_jobs (user_id, submitted_at DESC);

-- Per-planner-run token log (rolling 24 h budget); rows older than the retention are pruned.
CREATE TABLE IF NOT EXISTS mana_ai.token_usage (
    id          BIGSERIAL PRIMARY KEY,
    user_id     TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    mission_id  TEXT NOT NULL,
    tokens_used INT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_token_usage_agent_window ON mana_ai.token_usage (user_id, agent_id, ts DESC);
CREATE INDEX IF NOT EXISTS idx_token_usage_ts ON mana_ai.token_usage (ts);

-- Addition: the feed. A trigger copies every ai/aiMissions and ai/agents row of sync_changes here, in the
-- inserting transaction, stamped with that transaction's id. The refresh reads the feed, not sync_changes:
--   * it can read across users without bypassing sync_changes' row-level security (W15);
--   * its cursor is a transaction-id horizon, so a row committed late is never skipped (W10), and the work
--     of a refresh is proportional to the rows that are new (W9).
CREATE TABLE IF NOT EXISTS mana_ai.sync_feed (
    seq        BIGSERIAL PRIMARY KEY,
    xid        XID8 NOT NULL DEFAULT pg_current_xact_id(),
    change_id  UUID,
    user_id    TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    op         TEXT NOT NULL,
    data       JSONB,
    field_meta JSONB,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_sync_feed_xid ON mana_ai.sync_feed (xid);

CREATE TABLE IF NOT EXISTS mana_ai.refresh_cursor (
    name    TEXT PRIMARY KEY,
    horizon XID8 NOT NULL
);
INSERT INTO mana_ai.refresh_cursor (name, horizon) VALUES ('snapshots', '0'::xid8) ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION mana_ai.capture_sync_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, mana_ai AS
$$
BEGIN
    INSERT INTO mana_ai.sync_feed (change_id, user_id, table_name, record_id, op, data, field_meta, created_at)
    VALUES (NEW.id, NEW.user_id, NEW.table_name, NEW.record_id, NEW.op, NEW.data, NEW.field_meta, NEW.created_at);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION mana_ai.capture_sync_change() FROM PUBLIC;

DROP TRIGGER IF EXISTS mana_ai_capture_sync_change ON public.sync_changes;
CREATE TRIGGER mana_ai_capture_sync_change
    AFTER INSERT ON public.sync_changes
    FOR EACH ROW
    WHEN (NEW.app_id = 'ai' AND NEW.table_name IN ('aiMissions', 'agents'))
    EXECUTE FUNCTION mana_ai.capture_sync_change();

-- Backfill the history that predates the trigger. row_security = off makes this fail loudly (instead of
-- silently copying nothing) when the migrating role cannot read every user's rows: run `mana-ai migrate`
-- once as the database owner or an admin; the service itself then runs as a plain role.
SET LOCAL row_security = off;
INSERT INTO mana_ai.sync_feed (change_id, user_id, table_name, record_id, op, data, field_meta, created_at)
SELECT id, user_id, table_name, record_id, op, data, field_meta, created_at
FROM public.sync_changes
WHERE app_id = 'ai' AND table_name IN ('aiMissions', 'agents')
ORDER BY created_at, id;
SET LOCAL row_security = on;

-- Addition: one row per mission that a worker has claimed. It makes "planned once per due run" and the
-- per-agent concurrency limit hold across any number of processes (W7, W8), keeps the retry state of a
-- failing mission, and lets another worker take a run over when its lease expires (killed worker).
CREATE TABLE IF NOT EXISTS mana_ai.mission_runs (
    user_id              TEXT NOT NULL,
    mission_id           TEXT NOT NULL,
    due_at               TEXT NOT NULL,
    agent_id             TEXT NULL,
    state                TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'released')),
    owner                TEXT NOT NULL,
    lease_until          TIMESTAMPTZ NOT NULL,
    attempts             INT NOT NULL DEFAULT 0,
    consecutive_failures INT NOT NULL DEFAULT 0,
    not_before           TIMESTAMPTZ NULL,
    last_error           TEXT NULL,
    iteration_id         TEXT NULL,
    started_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at          TIMESTAMPTZ NULL,
    PRIMARY KEY (user_id, mission_id)
);
CREATE INDEX IF NOT EXISTS idx_mission_runs_agent_running
    ON mana_ai.mission_runs (user_id, agent_id) WHERE state = 'running';
