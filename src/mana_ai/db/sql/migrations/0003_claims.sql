-- Claiming a due mission run, with the agent gates that must hold across processes, in one round trip.
--
-- Decisions:
--   claimed              the caller owns the run until lease_until
--   in-flight            another worker holds a live lease on this mission
--   duplicate            this due run (same nextRunAt) was already planned
--   backoff              the run failed recently; retry after not_before
--   skipped-concurrency  the agent already has max_concurrent runs in flight
--   skipped-budget       the agent's rolling 24 h token usage reached its daily cap
--
-- Locks are taken mission first, then agent, by every caller, so they cannot deadlock. The agent lock makes
-- "count in-flight runs, then claim" atomic across workers.
CREATE OR REPLACE FUNCTION mana_ai.claim_mission_run(
    p_user_id TEXT,
    p_mission_id TEXT,
    p_due_at TEXT,
    p_agent_id TEXT,
    p_max_concurrent INT,
    p_max_tokens BIGINT,
    p_owner TEXT,
    p_lease INTERVAL
) RETURNS TABLE (decision TEXT, tokens_used_24h BIGINT, attempt INT, consecutive_failures INT)
    LANGUAGE plpgsql AS
$$
DECLARE
    run       mana_ai.mission_runs%ROWTYPE;
    in_flight INT;
    used      BIGINT := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('mana_ai.mission:' || p_user_id || ':' || p_mission_id, 0));

    SELECT * INTO run FROM mana_ai.mission_runs r WHERE r.user_id = p_user_id AND r.mission_id = p_mission_id;
    IF FOUND THEN
        IF run.state = 'running' AND run.lease_until > now() THEN
            RETURN QUERY SELECT 'in-flight'::TEXT, 0::BIGINT, run.attempts, run.consecutive_failures;
            RETURN;
        END IF;
        IF run.state = 'done' AND run.due_at = p_due_at THEN
            RETURN QUERY SELECT 'duplicate'::TEXT, 0::BIGINT, run.attempts, run.consecutive_failures;
            RETURN;
        END IF;
        IF run.not_before IS NOT NULL AND run.not_before > now() THEN
            RETURN QUERY SELECT 'backoff'::TEXT, 0::BIGINT, run.attempts, run.consecutive_failures;
            RETURN;
        END IF;
    END IF;

    IF p_agent_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('mana_ai.agent:' || p_user_id || ':' || p_agent_id, 0));
        IF p_max_concurrent IS NOT NULL THEN
            SELECT count(*) INTO in_flight
            FROM mana_ai.mission_runs r
            WHERE r.user_id = p_user_id AND r.agent_id = p_agent_id AND r.state = 'running'
              AND r.lease_until > now() AND r.mission_id <> p_mission_id;
            IF in_flight >= p_max_concurrent THEN
                RETURN QUERY SELECT 'skipped-concurrency'::TEXT, 0::BIGINT, coalesce(run.attempts, 0),
                    coalesce(run.consecutive_failures, 0);
                RETURN;
            END IF;
        END IF;
        IF p_max_tokens IS NOT NULL THEN
            SELECT coalesce(sum(t.tokens_used), 0) INTO used
            FROM mana_ai.token_usage t
            WHERE t.user_id = p_user_id AND t.agent_id = p_agent_id AND t.ts > now() - interval '24 hours';
            IF used >= p_max_tokens THEN
                RETURN QUERY SELECT 'skipped-budget'::TEXT, used, coalesce(run.attempts, 0),
                    coalesce(run.consecutive_failures, 0);
                RETURN;
            END IF;
        END IF;
    END IF;

    RETURN QUERY
    INSERT INTO mana_ai.mission_runs AS r
        (user_id, mission_id, due_at, agent_id, state, owner, lease_until, attempts, consecutive_failures, started_at)
    VALUES (p_user_id, p_mission_id, p_due_at, p_agent_id, 'running', p_owner, now() + p_lease, 1, 0, now())
    ON CONFLICT (user_id, mission_id) DO UPDATE SET
        due_at      = EXCLUDED.due_at,
        agent_id    = EXCLUDED.agent_id,
        state       = 'running',
        owner       = EXCLUDED.owner,
        lease_until = EXCLUDED.lease_until,
        attempts    = CASE WHEN r.due_at = EXCLUDED.due_at THEN r.attempts + 1 ELSE 1 END,
        started_at  = now(),
        finished_at = NULL
    RETURNING 'claimed'::TEXT, used, r.attempts, r.consecutive_failures;
END
$$;
