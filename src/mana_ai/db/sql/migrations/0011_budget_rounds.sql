-- Budgets held per LLM round (issue 15): before each round of a run whose agent has a daily cap, the run
-- reserves the round's worst case; the reservation is settled to the real usage by the run's next round or
-- by its write-back (docs/scheduling.md, "Budgets"; docs/schema.md).

-- What a running claim holds against its agent's cap, round by round: the tokens its finished rounds cost
-- (settled, not yet in token_usage) and the worst case of the round it sent last (0 once refused). Both
-- count only while the run holds a live lease, and only when written during the current claim
-- (round_at >= started_at), so a re-claimed mission starts from nothing without the claim resetting them.
ALTER TABLE mana_ai.mission_runs ADD COLUMN IF NOT EXISTS tokens_spent BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mana_ai.mission_runs ADD COLUMN IF NOT EXISTS round_reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mana_ai.mission_runs ADD COLUMN IF NOT EXISTS round_at TIMESTAMPTZ NULL;

-- Settle the run's previous round and reserve its next one, in one round trip.
--
-- p_spent is what the run's rounds cost so far (absolute, so a repeated call changes nothing), p_worst the
-- most the next round can cost. With
--   used  = the agent's token_usage of the last 24 h,
--   held  = spent + reserved of the agent's other runs in flight,
-- the round is admitted when
--   fits:  used + held + p_spent + p_worst <= cap, or
--   alone: no other run of the agent has a round reserved and used + held + p_spent < cap
--          (the one round that may cross the cap).
-- Refused, the run keeps p_spent and reserves nothing. A run whose lease is gone is refused (lost).
-- The agent lock is the claim's (claim_mission_run), so claims and rounds of one agent are decided one at a
-- time across all processes; one statement reads usage and runs in one snapshot, so a write-back committing
-- meanwhile (token_usage row in, run finished) is seen either whole or not at all.
CREATE OR REPLACE FUNCTION mana_ai.reserve_budget_round(
    p_user_id TEXT,
    p_mission_id TEXT,
    p_agent_id TEXT,
    p_owner TEXT,
    p_cap BIGINT,
    p_spent BIGINT,
    p_worst BIGINT
) RETURNS TABLE (admitted BOOLEAN, tokens_used_24h BIGINT, tokens_held BIGINT, detail TEXT)
    LANGUAGE plpgsql AS
$$
DECLARE
    used   NUMERIC;
    held   NUMERIC;
    others BIGINT;
    fits   BOOLEAN;
    alone  BOOLEAN;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('mana_ai.agent:' || p_user_id || ':' || p_agent_id, 0));

    SELECT (SELECT coalesce(sum(t.tokens_used), 0) FROM mana_ai.token_usage t
            WHERE t.user_id = p_user_id AND t.agent_id = p_agent_id AND t.ts > now() - interval '24 hours'),
           coalesce(sum(r.tokens_spent + r.round_reserved), 0),
           count(*) FILTER (WHERE r.round_reserved > 0)
    INTO used, held, others
    FROM mana_ai.mission_runs r
    WHERE r.user_id = p_user_id AND r.agent_id = p_agent_id AND r.state = 'running'
      AND r.lease_until > now() AND r.round_at >= r.started_at AND r.mission_id <> p_mission_id;

    fits := used + held + p_spent + p_worst <= p_cap;
    alone := others = 0 AND used + held + p_spent < p_cap;

    UPDATE mana_ai.mission_runs r
    SET tokens_spent = p_spent,
        round_reserved = CASE WHEN fits OR alone THEN p_worst ELSE 0 END,
        round_at = now()
    WHERE r.user_id = p_user_id AND r.mission_id = p_mission_id AND r.owner = p_owner
      AND r.state = 'running' AND r.lease_until > now();
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, used::BIGINT, held::BIGINT, 'the run''s claim was lost'::TEXT;
        RETURN;
    END IF;
    IF fits OR alone THEN
        RETURN QUERY SELECT true, used::BIGINT, held::BIGINT, ''::TEXT;
        RETURN;
    END IF;
    RETURN QUERY SELECT false, used::BIGINT, held::BIGINT,
        CASE WHEN used + held + p_spent >= p_cap
             THEN format('%s tokens used, %s held by runs in flight and %s spent by this run: the agent''s %s '
                         'per 24 h are taken', used, held, p_spent, p_cap)
             ELSE format('the next round may cost up to %s tokens, %s of the agent''s %s per 24 h are left '
                         '(%s used, %s held by runs in flight, %s spent by this run) and %s other round(s) '
                         'of the agent are in flight', p_worst, p_cap - used - held - p_spent, p_cap, used,
                         held, p_spent, others)
        END;
END
$$;
