-- Scheduling: budget reservations, short leases renewed by a heartbeat, dispatch marks, cluster-wide
-- provider pacing, and a claim that re-checks the mission and its agent (docs/schema.md, "Scheduling").

-- The token share a running claim holds against its agent's daily budget (settled at write-back: a finished
-- run no longer counts, its token_usage row does).
ALTER TABLE mana_ai.mission_runs ADD COLUMN IF NOT EXISTS token_share BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS idx_mission_runs_owner_running
    ON mana_ai.mission_runs (owner) WHERE state = 'running';

-- One row per mission handed to a planning job and not finished yet: the dispatcher never defers a mission
-- again while a job holds it (queued, or waiting in a worker for its agent's slot). `until` is renewed by
-- the holding worker's heartbeat; a row of a killed worker expires by itself.
CREATE TABLE IF NOT EXISTS mana_ai.mission_dispatch (
    user_id    TEXT NOT NULL,
    mission_id TEXT NOT NULL,
    due_at     TEXT NOT NULL,
    owner      TEXT NULL,
    until      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, mission_id)
);
CREATE INDEX IF NOT EXISTS idx_mission_dispatch_owner ON mana_ai.mission_dispatch (owner);

-- Cluster-wide pacing of LLM requests (MANA_LLM_MAX_RPM / MANA_LLM_MAX_TPM): a theoretical arrival time per
-- limit (GCRA). Each request moves it forward by its cost; a sender waits until it is at most one burst
-- ahead of now.
CREATE TABLE IF NOT EXISTS mana_ai.llm_pacing (
    name TEXT PRIMARY KEY,
    tat  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO mana_ai.llm_pacing (name) VALUES ('requests'), ('tokens') ON CONFLICT DO NOTHING;

-- Claiming a due mission run, with the gates that must hold across processes, in one round trip.
--
-- Decisions:
--   claimed                the caller owns the run until lease_until (renewed by its heartbeat) and may
--                          spend token_share tokens (NULL: the agent has no daily cap)
--   in-flight              another worker holds a live lease on this mission
--   duplicate              this due run (same nextRunAt) was already planned
--   backoff                the run failed recently; retry after not_before
--   stale                  the mission was paused, deleted or rescheduled since it was found due
--   skipped-paused / skipped-archived / skipped-unknown-agent
--                          the agent's state as the latest refresh saw it
--   skipped-concurrency    the agent already has max_concurrent runs in flight
--   skipped-budget         the agent's used + reserved tokens leave no share for another run
-- Every decision but `claimed` comes with a one-line detail.
--
-- Budget: a run reserves twice the agent's average over its last 10 runs (the whole remainder while the agent
-- has no history), capped by what is left after the recorded 24 h usage and the shares of the runs in
-- flight. A run alone may take the remainder even when it is less than its estimate. The planner loop stops
-- at the share, so recorded usage overshoots the cap by at most the round that crosses it.
--
-- Locks are taken mission first, then agent, by every caller, so they cannot deadlock. The agent lock makes
-- "count in-flight runs and reservations, then claim" atomic across workers.
DROP FUNCTION IF EXISTS mana_ai.claim_mission_run(TEXT, TEXT, TEXT, TEXT, INT, BIGINT, TEXT, INTERVAL);
CREATE FUNCTION mana_ai.claim_mission_run(
    p_user_id TEXT,
    p_mission_id TEXT,
    p_due_at TEXT,
    p_agent_id TEXT,
    p_max_concurrent INT,
    p_max_tokens BIGINT,
    p_owner TEXT,
    p_lease INTERVAL
) RETURNS TABLE (decision TEXT, tokens_used_24h BIGINT, attempt INT, consecutive_failures INT,
                 token_share BIGINT, tokens_reserved BIGINT, detail TEXT)
    LANGUAGE plpgsql AS
$$
DECLARE
    run        mana_ai.mission_runs%ROWTYPE;
    has_run    BOOLEAN;
    m_state    TEXT;
    m_next     TEXT;
    m_gone     BOOLEAN;
    a_state    TEXT;
    a_gone     BOOLEAN;
    in_flight  INT;
    used       BIGINT := 0;
    reserved   BIGINT := 0;
    estimate   NUMERIC;
    remaining  BIGINT;
    share      BIGINT := NULL;
    n_attempts INT;
    n_failures INT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('mana_ai.mission:' || p_user_id || ':' || p_mission_id, 0));

    SELECT * INTO run FROM mana_ai.mission_runs r WHERE r.user_id = p_user_id AND r.mission_id = p_mission_id;
    has_run := FOUND;
    n_attempts := CASE WHEN has_run THEN run.attempts ELSE 0 END;
    n_failures := CASE WHEN has_run THEN run.consecutive_failures ELSE 0 END;
    IF has_run THEN
        IF run.state = 'running' AND run.lease_until > now() THEN
            RETURN QUERY SELECT 'in-flight'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT, 0::BIGINT,
                format('claimed by %s until %s', run.owner,
                       to_char(run.lease_until AT TIME ZONE 'UTC', 'HH24:MI:SS"Z"'));
            RETURN;
        END IF;
        IF run.state = 'done' AND run.due_at = p_due_at THEN
            RETURN QUERY SELECT 'duplicate'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT, 0::BIGINT,
                format('the run due at %s was planned already', p_due_at);
            RETURN;
        END IF;
        IF run.not_before IS NOT NULL AND run.not_before > now() THEN
            RETURN QUERY SELECT 'backoff'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT, 0::BIGINT,
                format('retry after %s (%s failed attempt(s) in a row: %s)',
                       to_char(run.not_before AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS"Z"'),
                       run.consecutive_failures, left(coalesce(run.last_error, '?'), 200));
            RETURN;
        END IF;
    END IF;

    -- Re-check the mission as the latest refresh saw it: a job's arguments may be older than a pause.
    SELECT s.record->>'state', s.record->>'nextRunAt', s.deleted OR s.record->>'deletedAt' IS NOT NULL
    INTO m_state, m_next, m_gone
    FROM mana_ai.mission_snapshots s WHERE s.user_id = p_user_id AND s.mission_id = p_mission_id;
    IF NOT FOUND OR m_gone THEN
        RETURN QUERY SELECT 'stale'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT, 0::BIGINT,
            'the mission was deleted'::TEXT;
        RETURN;
    END IF;
    IF m_state IS DISTINCT FROM 'active' THEN
        RETURN QUERY SELECT 'stale'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT, 0::BIGINT,
            format('the mission is %s', coalesce(m_state, 'without a state'));
        RETURN;
    END IF;
    IF m_next IS DISTINCT FROM p_due_at THEN
        RETURN QUERY SELECT 'stale'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT, 0::BIGINT,
            format('the mission was rescheduled to %s', coalesce(m_next, 'never'));
        RETURN;
    END IF;

    IF p_agent_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('mana_ai.agent:' || p_user_id || ':' || p_agent_id, 0));
        SELECT a.record->>'state', a.deleted INTO a_state, a_gone
        FROM mana_ai.agent_snapshots a WHERE a.user_id = p_user_id AND a.agent_id = p_agent_id;
        IF NOT FOUND OR a_gone THEN
            RETURN QUERY SELECT 'skipped-unknown-agent'::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT,
                0::BIGINT, format('agent %s does not exist', p_agent_id);
            RETURN;
        END IF;
        IF a_state IN ('paused', 'archived') THEN
            RETURN QUERY SELECT ('skipped-' || a_state)::TEXT, 0::BIGINT, n_attempts, n_failures, NULL::BIGINT,
                0::BIGINT, format('the agent is %s', a_state);
            RETURN;
        END IF;
        IF p_max_concurrent IS NOT NULL THEN
            SELECT count(*) INTO in_flight
            FROM mana_ai.mission_runs r
            WHERE r.user_id = p_user_id AND r.agent_id = p_agent_id AND r.state = 'running'
              AND r.lease_until > now() AND r.mission_id <> p_mission_id;
            IF in_flight >= p_max_concurrent THEN
                RETURN QUERY SELECT 'skipped-concurrency'::TEXT, 0::BIGINT, n_attempts, n_failures,
                    NULL::BIGINT, 0::BIGINT,
                    format('%s of the agent''s %s concurrent runs are in flight', in_flight, p_max_concurrent);
                RETURN;
            END IF;
        END IF;
        IF p_max_tokens IS NOT NULL THEN
            SELECT coalesce(sum(t.tokens_used), 0) INTO used
            FROM mana_ai.token_usage t
            WHERE t.user_id = p_user_id AND t.agent_id = p_agent_id AND t.ts > now() - interval '24 hours';
            SELECT coalesce(sum(r.token_share), 0) INTO reserved
            FROM mana_ai.mission_runs r
            WHERE r.user_id = p_user_id AND r.agent_id = p_agent_id AND r.state = 'running'
              AND r.lease_until > now() AND r.mission_id <> p_mission_id;
            SELECT avg(x.tokens_used) INTO estimate
            FROM (SELECT t.tokens_used FROM mana_ai.token_usage t
                  WHERE t.user_id = p_user_id AND t.agent_id = p_agent_id
                  ORDER BY t.ts DESC LIMIT 10) x;
            remaining := p_max_tokens - used - reserved;
            IF remaining > 0 AND estimate IS NULL THEN
                share := remaining;
            ELSIF remaining > 0 AND (reserved = 0 OR ceil(estimate) <= remaining) THEN
                share := least(remaining, greatest(ceil(estimate * 2), 1)::BIGINT);
            END IF;
            IF share IS NULL THEN
                RETURN QUERY SELECT 'skipped-budget'::TEXT, used, n_attempts, n_failures, NULL::BIGINT, reserved,
                    format('%s tokens used and %s reserved of the agent''s %s per 24 h', used, reserved,
                           p_max_tokens);
                RETURN;
            END IF;
        END IF;
    END IF;

    RETURN QUERY
    INSERT INTO mana_ai.mission_runs AS r
        (user_id, mission_id, due_at, agent_id, state, owner, lease_until, attempts, consecutive_failures,
         started_at, token_share)
    VALUES (p_user_id, p_mission_id, p_due_at, p_agent_id, 'running', p_owner, now() + p_lease, 1, 0, now(),
            coalesce(share, 0))
    ON CONFLICT (user_id, mission_id) DO UPDATE SET
        due_at      = EXCLUDED.due_at,
        agent_id    = EXCLUDED.agent_id,
        state       = 'running',
        owner       = EXCLUDED.owner,
        lease_until = EXCLUDED.lease_until,
        attempts    = CASE WHEN r.due_at = EXCLUDED.due_at THEN r.attempts + 1 ELSE 1 END,
        started_at  = now(),
        finished_at = NULL,
        token_share = EXCLUDED.token_share
    RETURNING 'claimed'::TEXT, used, r.attempts, r.consecutive_failures, share, reserved, ''::TEXT;
END
$$;
