-- The workbench (src/mana_ai/workbench, README "Workbench"): decisions on server proposals and the domain
-- events of executed steps. Both tables hold one user's data and are only read and written inside
-- Database.with_user, so they get FORCE row-level security like decrypt_audit. Idempotent.

-- One row per decided proposal (plan step of a server iteration). The primary key is what makes a decision
-- idempotent across browser tabs, devices and the CLI: a step is approved (and executed) at most once, even
-- if the iterations array in the sync log were overwritten by a concurrent last-writer-wins update.
CREATE TABLE IF NOT EXISTS mana_ai.proposal_decisions (
    user_id      TEXT NOT NULL,
    mission_id   TEXT NOT NULL,
    iteration_id TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    agent_id     TEXT NULL,
    tool_name    TEXT NOT NULL,
    module       TEXT NOT NULL,
    decision     TEXT NOT NULL CHECK (decision IN ('approved', 'rejected', 'expired')),
    outcome      TEXT NOT NULL CHECK (outcome IN ('done', 'failed', 'pending', 'none')),
    params       JSONB NULL,
    feedback     TEXT NULL,
    error        TEXT NULL,
    records      JSONB NOT NULL DEFAULT '[]',
    decided_by   TEXT NOT NULL,
    decided_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, mission_id, iteration_id, step_id)
);
CREATE INDEX IF NOT EXISTS idx_proposal_decisions_user_ts ON mana_ai.proposal_decisions (user_id, decided_at DESC);
ALTER TABLE mana_ai.proposal_decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE mana_ai.proposal_decisions FORCE ROW LEVEL SECURITY;

-- Domain events emitted by executed steps and by the goal tracker (TaskCompleted, DrinkLogged, GoalReached …),
-- with the proposal they came from. In the web app these live on an in-memory bus; we keep them so the
-- timeline can show them and so "GoalReached fired once per period" is checkable.
CREATE TABLE IF NOT EXISTS mana_ai.domain_events (
    id           BIGSERIAL PRIMARY KEY,
    user_id      TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    app_id       TEXT NOT NULL,
    table_name   TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}',
    mission_id   TEXT NULL,
    iteration_id TEXT NULL,
    step_id      TEXT NULL,
    agent_id     TEXT NULL,
    module       TEXT NULL,
    ts           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_domain_events_user_ts ON mana_ai.domain_events (user_id, ts DESC);
CREATE INDEX IF NOT EXISTS idx_domain_events_user_type ON mana_ai.domain_events (user_id, event_type, ts DESC);
ALTER TABLE mana_ai.domain_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE mana_ai.domain_events FORCE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'mana_ai' AND tablename = 'proposal_decisions'
                   AND policyname = 'proposal_decisions_user_scope') THEN
        CREATE POLICY proposal_decisions_user_scope ON mana_ai.proposal_decisions
            USING (user_id = current_setting('app.current_user_id', true))
            WITH CHECK (user_id = current_setting('app.current_user_id', true));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'mana_ai' AND tablename = 'domain_events'
                   AND policyname = 'domain_events_user_scope') THEN
        CREATE POLICY domain_events_user_scope ON mana_ai.domain_events
            USING (user_id = current_setting('app.current_user_id', true))
            WITH CHECK (user_id = current_setting('app.current_user_id', true));
    END IF;
END
$$;
