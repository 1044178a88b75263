-- Named queries. Only the store modules use these names (see mana_ai/db/queries.py).

-- name: refresh_lock
-- Serialises snapshot refreshes across every process that shares the database.
SELECT pg_advisory_xact_lock(7234001)

-- name: refresh_window
-- The cursor is a transaction-id horizon: every feed row whose transaction id is below the oldest
-- transaction still running is committed (or rolled back) and visible now; rows above it wait for the next
-- refresh. So a row that commits late is never skipped, whatever its created_at says.
SELECT c.horizon::text AS old_horizon, pg_snapshot_xmin(pg_current_snapshot())::text AS new_horizon
FROM mana_ai.refresh_cursor c
WHERE c.name = 'snapshots'

-- name: restore_refresh_cursor
-- The cursor row is missing (bookkeeping wiped by hand): rebuild the feed and start over (migration 0008).
SELECT mana_ai.restore_refresh_cursor() AS rebuilt

-- name: feed_window
-- The new rows in arrival order (a tie between two writes of one field goes to the later arrival). The JSON
-- columns come as text: the refresh parses them with orjson directly, which is much cheaper per row than a
-- per-value type loader on a bootstrap of hundreds of thousands of rows.
SELECT f.table_name, f.user_id, f.record_id, f.op, f.data::text, f.field_meta::text, f.seq,
       to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_iso
FROM mana_ai.sync_feed f
WHERE f.xid >= %(old)s::text::xid8 AND f.xid < %(new)s::text::xid8
ORDER BY f.seq

-- name: mission_snapshots_for_keys
SELECT s.user_id, s.mission_id AS record_id, s.record, s.deleted
FROM mana_ai.mission_snapshots s
JOIN unnest(%(users)s::text[], %(ids)s::text[]) AS k(user_id, record_id)
  ON s.user_id = k.user_id AND s.mission_id = k.record_id

-- name: agent_snapshots_for_keys
SELECT s.user_id, s.agent_id AS record_id, s.record, s.deleted
FROM mana_ai.agent_snapshots s
JOIN unnest(%(users)s::text[], %(ids)s::text[]) AS k(user_id, record_id)
  ON s.user_id = k.user_id AND s.agent_id = k.record_id

-- name: upsert_mission_snapshots
-- One statement for the whole batch: the rows arrive as one JSON array.
INSERT INTO mana_ai.mission_snapshots AS s (user_id, mission_id, record, last_applied_at, updated_at, deleted)
SELECT x.user_id, x.record_id, x.record, x.last_applied_at::timestamptz, now(), x.deleted
FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(user_id text, record_id text, record jsonb,
                                               last_applied_at text, deleted boolean)
ON CONFLICT (user_id, mission_id) DO UPDATE SET
    record = EXCLUDED.record,
    last_applied_at = EXCLUDED.last_applied_at,
    updated_at = now(),
    deleted = EXCLUDED.deleted

-- name: upsert_agent_snapshots
INSERT INTO mana_ai.agent_snapshots AS s (user_id, agent_id, record, last_applied_at, updated_at, deleted)
SELECT x.user_id, x.record_id, x.record, x.last_applied_at::timestamptz, now(), x.deleted
FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(user_id text, record_id text, record jsonb,
                                               last_applied_at text, deleted boolean)
ON CONFLICT (user_id, agent_id) DO UPDATE SET
    record = EXCLUDED.record,
    last_applied_at = EXCLUDED.last_applied_at,
    updated_at = now(),
    deleted = EXCLUDED.deleted

-- name: advance_refresh_cursor
UPDATE mana_ai.refresh_cursor SET horizon = %(horizon)s::text::xid8 WHERE name = 'snapshots'

-- name: listen_tick_batches
-- POST /internal/tick on several planning processes waits here for the reports of the batches it deferred.
LISTEN mana_ai_tick_batches

-- name: notify_tick_batch
-- A planning batch deferred by POST /internal/tick reports its decisions (a small JSON object, no text of
-- any mission) to the process that waits for it.
SELECT pg_notify('mana_ai_tick_batches', %(payload)s)

-- name: prune_feed
-- Rows below the cursor are folded into the snapshots already.
DELETE FROM mana_ai.sync_feed
WHERE xid < (SELECT horizon FROM mana_ai.refresh_cursor WHERE name = 'snapshots')

-- name: due_missions
-- Round-robin across users, then across each user's agents (oldest nextRunAt first within an agent): one user's
-- 2,000 due missions cannot hold back another user's one (issue 15). Missions without an agent form one group.
WITH due AS (
    SELECT s.user_id, s.mission_id, s.record, s.record->>'nextRunAt' AS due_at,
           row_number() OVER (PARTITION BY s.user_id, coalesce(s.record->>'agentId', '')
                              ORDER BY s.record->>'nextRunAt', s.mission_id) AS agent_turn
    FROM mana_ai.mission_snapshots s
    WHERE s.record->>'state' = 'active'
      AND s.record->>'nextRunAt' IS NOT NULL
      AND s.record->>'nextRunAt' <= %(now)s
      AND s.record->>'deletedAt' IS NULL
      AND NOT s.deleted
), turns AS (
    SELECT due.*, row_number() OVER (PARTITION BY user_id ORDER BY agent_turn, due_at, mission_id) AS user_turn
    FROM due
)
SELECT t.user_id, t.record
FROM turns t
ORDER BY t.user_turn, t.due_at, t.user_id, t.mission_id
LIMIT %(limit)s

-- name: dispatch_due
-- The cluster dispatcher's pick: due missions in the same fair order, leaving out what a job would only skip
-- (held by a planning job, in flight, planned for this due time, backing off, agent not active, agent at its
-- concurrency limit or out of budget), at most as many per agent as it has free slots. The picked missions
-- are marked in mission_dispatch in the same statement, so two dispatchers never hand out one mission twice.
WITH due AS (
    -- An empty agentId means no agent, as ServerMission reads it (the runner plans such a mission agent-less).
    SELECT s.user_id, s.mission_id, s.record->>'nextRunAt' AS due_at,
           nullif(s.record->>'agentId', '') AS agent_id
    FROM mana_ai.mission_snapshots s
    WHERE s.record->>'state' = 'active'
      AND s.record->>'nextRunAt' IS NOT NULL
      AND s.record->>'nextRunAt' <= %(now)s
      AND s.record->>'deletedAt' IS NULL
      AND NOT s.deleted
      AND NOT EXISTS (SELECT 1 FROM mana_ai.mission_dispatch d
                      WHERE d.user_id = s.user_id AND d.mission_id = s.mission_id AND d.until > now())
      AND NOT EXISTS (SELECT 1 FROM mana_ai.mission_runs r
                      WHERE r.user_id = s.user_id AND r.mission_id = s.mission_id
                        AND ((r.state = 'running' AND r.lease_until > now())
                             OR (r.state = 'done' AND r.due_at = s.record->>'nextRunAt')
                             OR r.not_before > now()))
      -- A mission waiting for deep research is polled every 30 s, not on every dispatch.
      AND NOT EXISTS (SELECT 1 FROM mana_ai.mission_research_jobs j
                      WHERE j.user_id = s.user_id AND j.mission_id = s.mission_id
                        AND coalesce(j.last_polled_at, j.submitted_at) > now() - interval '30 seconds')
), agents AS (
    SELECT a.user_id, a.agent_id, coalesce(a.record->>'state', 'active') AS state,
           a.deleted OR a.record->>'deletedAt' IS NOT NULL AS deleted,
           CASE WHEN jsonb_typeof(a.record->'maxConcurrentMissions') = 'number'
                THEN least(greatest(floor((a.record->>'maxConcurrentMissions')::numeric), 0), 2147483647)::int
                ELSE 1 END AS max_concurrent,
           CASE WHEN jsonb_typeof(a.record->'maxTokensPerDay') = 'number'
                THEN (a.record->>'maxTokensPerDay')::numeric END AS max_tokens
    FROM mana_ai.agent_snapshots a
    WHERE (a.user_id, a.agent_id) IN (SELECT DISTINCT user_id, agent_id FROM due WHERE agent_id IS NOT NULL)
), slots AS (
    SELECT g.user_id, g.agent_id,
           g.max_concurrent - (SELECT count(*) FROM mana_ai.mission_runs r
                               WHERE r.user_id = g.user_id AND r.agent_id = g.agent_id
                                 AND r.state = 'running' AND r.lease_until > now()) AS free,
           g.max_tokens IS NOT NULL AND g.max_tokens <= (
               SELECT coalesce(sum(t.tokens_used), 0) FROM mana_ai.token_usage t
               WHERE t.user_id = g.user_id AND t.agent_id = g.agent_id
                 AND t.ts > now() - interval '24 hours') AS spent
    FROM agents g
    WHERE NOT g.deleted AND g.state = 'active'
), ranked AS (
    SELECT due.*, sl.free,
           row_number() OVER (PARTITION BY due.user_id, coalesce(due.agent_id, '')
                              ORDER BY due.due_at, due.mission_id) AS agent_turn
    FROM due
    LEFT JOIN slots sl ON sl.user_id = due.user_id AND sl.agent_id = due.agent_id
    WHERE due.agent_id IS NULL OR (sl.user_id IS NOT NULL AND NOT sl.spent)
), turns AS (
    SELECT ranked.*,
           row_number() OVER (PARTITION BY user_id ORDER BY agent_turn, due_at, mission_id) AS user_turn
    FROM ranked
    WHERE free IS NULL OR agent_turn <= free
), picked AS (
    SELECT user_id, mission_id, due_at, user_turn FROM turns
    ORDER BY user_turn, due_at, user_id, mission_id
    LIMIT %(limit)s
), marked AS (
    INSERT INTO mana_ai.mission_dispatch AS d (user_id, mission_id, due_at, owner, until)
    SELECT user_id, mission_id, due_at, NULL, now() + %(hold)s::interval FROM picked
    ON CONFLICT (user_id, mission_id) DO UPDATE
        SET due_at = EXCLUDED.due_at, owner = NULL, until = EXCLUDED.until
        WHERE d.until <= now()
    RETURNING d.user_id, d.mission_id
)
SELECT p.user_id, p.mission_id
FROM picked p JOIN marked m ON m.user_id = p.user_id AND m.mission_id = p.mission_id
ORDER BY p.user_turn, p.due_at, p.user_id, p.mission_id

-- name: next_due_at
-- The earliest nextRunAt still ahead (the dispatcher sleeps until then when it is sooner than its interval).
SELECT min(s.record->>'nextRunAt') AS next_due
FROM mana_ai.mission_snapshots s
WHERE s.record->>'state' = 'active' AND s.record->>'nextRunAt' > %(now)s
  AND s.record->>'deletedAt' IS NULL AND NOT s.deleted

-- name: dispatch_take
-- A planning job took these missions: they are held by this worker (renewed by its heartbeat) until done.
UPDATE mana_ai.mission_dispatch d SET owner = %(owner)s, until = now() + %(lease)s::interval
FROM unnest(%(users)s::text[], %(ids)s::text[]) AS k(user_id, mission_id)
WHERE d.user_id = k.user_id AND d.mission_id = k.mission_id

-- name: dispatch_done
DELETE FROM mana_ai.mission_dispatch d
USING unnest(%(users)s::text[], %(ids)s::text[]) AS k(user_id, mission_id)
WHERE d.user_id = k.user_id AND d.mission_id = k.mission_id

-- name: heartbeat
-- Renew, in one statement, the leases of the runs this process is planning right now and the dispatch marks
-- of the missions its jobs hold right now (the keys come from the process, so a run or mark it lost track of
-- — a write-back that failed while the database restarted — is not kept alive: it expires).
WITH runs AS (
    UPDATE mana_ai.mission_runs r SET lease_until = now() + %(lease)s::interval
    FROM unnest(%(run_users)s::text[], %(run_ids)s::text[]) AS k(user_id, mission_id)
    WHERE r.user_id = k.user_id AND r.mission_id = k.mission_id
      AND r.owner = %(owner)s AND r.state = 'running' AND r.lease_until > now()
    RETURNING 1
), marks AS (
    UPDATE mana_ai.mission_dispatch d SET until = now() + %(lease)s::interval
    FROM unnest(%(mark_users)s::text[], %(mark_ids)s::text[]) AS k(user_id, mission_id)
    WHERE d.user_id = k.user_id AND d.mission_id = k.mission_id AND d.owner = %(owner)s AND d.until > now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM marks) AS marks

-- name: agents_for_users
SELECT a.user_id, a.agent_id, a.record, a.deleted
FROM mana_ai.agent_snapshots a
WHERE a.user_id = ANY(%(users)s::text[])

-- name: mission_snapshot
SELECT s.user_id, s.record, s.deleted
FROM mana_ai.mission_snapshots s
WHERE s.user_id = %(user_id)s AND s.mission_id = %(mission_id)s

-- name: missions_of_user
SELECT s.record, s.deleted
FROM mana_ai.mission_snapshots s
WHERE s.user_id = %(user_id)s AND NOT s.deleted
ORDER BY s.record->>'nextRunAt' NULLS LAST, s.mission_id

-- name: run_errors_of_user
-- Why each mission's last run failed: the workbench's reason for a mission paused without a failed iteration
-- (its iterations too large for another one, or a plan the database refused).
SELECT mission_id, last_error
FROM mana_ai.mission_runs
WHERE user_id = %(user_id)s AND state = 'failed' AND last_error IS NOT NULL

-- name: agents_of_user
SELECT a.record, a.deleted
FROM mana_ai.agent_snapshots a
WHERE a.user_id = %(user_id)s AND NOT a.deleted
ORDER BY a.record->>'name', a.agent_id

-- name: record_rows
-- Every row of one record, for a replay inside a with_user transaction (row-level security applies).
-- In created_at order as mana-sync serves a pull; rows of one transaction share it and follow ctid, which
-- in the append-only log is the order they were written (as the feed's seq and a pull's index scan have
-- them), except where vacuum freed space in an earlier page: a stale write-back corrects what then differs.
SELECT c.op, c.data, c.field_meta,
       to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_iso
FROM public.sync_changes c
WHERE c.table_name = %(table)s AND c.record_id = %(record_id)s AND c.app_id = %(app_id)s
  AND c.user_id = %(user_id)s
ORDER BY c.created_at, c.ctid

-- name: correct_mission_snapshot
-- A mission its write-back found stale takes the replay's state (mana_ai.runner.writeback.correction_params).
UPDATE mana_ai.mission_snapshots
SET record = coalesce(%(record)s::jsonb, record), deleted = %(deleted)s, updated_at = now()
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s
  -- Only while the snapshot still finds the run due: a refresh that committed meanwhile is not undone.
  AND NOT deleted AND record->>'state' = 'active' AND record->>'nextRunAt' = %(due_at)s

-- name: insert_change
INSERT INTO public.sync_changes
    (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, schema_version, actor, origin,
     space_id)
VALUES (%(app_id)s, %(table)s, %(record_id)s, %(user_id)s, %(op)s, %(data)s, %(field_meta)s, %(client_id)s, 1,
        %(actor)s, %(origin)s, %(space_id)s)
RETURNING id

-- name: lock_record
-- Serialises our own writers of one record (write-back, approvals) so none appends from a stale base.
SELECT pg_advisory_xact_lock(hashtextextended('mana_ai.record:' || %(user_id)s || ':' || %(record_id)s, 0))

-- name: running_claim
-- The live claim of a mission, if a worker is planning it right now (`mana-ai missions run` leaves it alone).
SELECT owner, to_char(lease_until AT TIME ZONE 'UTC', 'HH24:MI:SS"Z"') AS lease_until
FROM mana_ai.mission_runs
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND state = 'running' AND lease_until > now()

-- name: claim_run
SELECT decision, tokens_used_24h, attempt, consecutive_failures, token_share, tokens_reserved, detail
FROM mana_ai.claim_mission_run(%(user_id)s, %(mission_id)s, %(due_at)s, %(agent_id)s, %(max_concurrent)s,
                               %(max_tokens)s, %(owner)s, %(lease)s)

-- name: finish_run_done
UPDATE mana_ai.mission_runs
SET state = 'done', finished_at = now(), consecutive_failures = 0, last_error = NULL, not_before = NULL,
    iteration_id = %(iteration_id)s
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND owner = %(owner)s AND due_at = %(due_at)s
  AND state = 'running' AND lease_until > now()
RETURNING 1 AS ok

-- name: finish_run_skipped
-- A run skipped as missed: planned for this due time (a duplicate from now on), but no success: the streak of
-- failed attempts that pauses a mission goes on.
UPDATE mana_ai.mission_runs
SET state = 'done', finished_at = now(), not_before = NULL, iteration_id = %(iteration_id)s
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND owner = %(owner)s AND due_at = %(due_at)s
  AND state = 'running' AND lease_until > now()
RETURNING 1 AS ok

-- name: finish_run_failed
UPDATE mana_ai.mission_runs
SET state = 'failed', finished_at = now(), consecutive_failures = consecutive_failures + 1,
    last_error = %(error)s, not_before = now() + %(backoff)s::interval,
    iteration_id = %(iteration_id)s
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND owner = %(owner)s
  AND state = 'running'
RETURNING consecutive_failures

-- name: release_run
-- Give a claimed run back without an outcome (research pending, shutdown, stale due time).
UPDATE mana_ai.mission_runs
SET state = 'released', finished_at = now(), lease_until = now()
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND owner = %(owner)s AND state = 'running'
RETURNING 1

-- name: release_owned_runs
-- Shutdown: give back every run this process still holds.
UPDATE mana_ai.mission_runs
SET state = 'released', finished_at = now(), lease_until = now()
WHERE owner = %(owner)s AND state = 'running'

-- name: agent_budget
-- An agent's rolling 24 h usage and the shares of its runs in flight (agents show, workbench).
SELECT (SELECT coalesce(sum(t.tokens_used), 0) FROM mana_ai.token_usage t
        WHERE t.user_id = %(user_id)s AND t.agent_id = %(agent_id)s
          AND t.ts > now() - interval '24 hours')::bigint AS used,
       (SELECT coalesce(sum(r.token_share), 0) FROM mana_ai.mission_runs r
        WHERE r.user_id = %(user_id)s AND r.agent_id = %(agent_id)s AND r.state = 'running'
          AND r.lease_until > now())::bigint AS reserved

-- name: agents_usage_24h
-- The rolling 24 h usage of the given agents and the daily cap each has now (the budget gauges of one
-- process, kept current: a cap edited since the process last ran the agent counts at once). One index range
-- per agent, not the whole window of every user.
SELECT k.user_id, k.agent_id,
       (SELECT coalesce(sum(t.tokens_used), 0) FROM mana_ai.token_usage t
        WHERE t.user_id = k.user_id AND t.agent_id = k.agent_id
          AND t.ts > now() - interval '24 hours')::bigint AS used,
       CASE WHEN jsonb_typeof(a.record->'maxTokensPerDay') = 'number'
            THEN (a.record->>'maxTokensPerDay')::numeric END AS cap
FROM unnest(%(users)s::text[], %(agents)s::text[]) AS k(user_id, agent_id)
LEFT JOIN mana_ai.agent_snapshots a ON a.user_id = k.user_id AND a.agent_id = k.agent_id

-- name: budget_round
-- Before an LLM round of a run whose agent has a daily cap: settle the run's earlier rounds to what they
-- cost and reserve this round's worst case, if it is admitted (mana_ai.reserve_budget_round, migration 0011).
SELECT admitted, tokens_used_24h, tokens_held, detail
FROM mana_ai.reserve_budget_round(%(user_id)s, %(mission_id)s, %(agent_id)s, %(owner)s, %(cap)s, %(spent)s,
                                  %(worst)s)

-- name: llm_pace
-- Take one slot of a cluster-wide limit (GCRA): the arrival time moves forward by the request's cost; the
-- caller waits until it is at most one burst ahead of now. An upsert, so a wiped table paces again at once.
INSERT INTO mana_ai.llm_pacing AS p (name, tat)
VALUES (%(name)s, clock_timestamp() + make_interval(secs => %(cost_s)s))
ON CONFLICT (name) DO UPDATE SET tat = greatest(p.tat, clock_timestamp()) + make_interval(secs => %(cost_s)s)
RETURNING greatest(extract(epoch FROM p.tat - clock_timestamp()) - %(cost_s)s - %(burst_s)s, 0)::float8 AS wait_s

-- name: llm_pace_adjust
-- Settle a token estimate with the real usage (negative: give slots back), or push the arrival time past a
-- provider's Retry-After.
UPDATE mana_ai.llm_pacing
SET tat = greatest(tat + make_interval(secs => %(cost_s)s), clock_timestamp() + make_interval(secs => %(floor_s)s))
WHERE name = %(name)s

-- name: insert_token_usage
INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)
VALUES (%(user_id)s, %(agent_id)s, %(mission_id)s, %(tokens)s)

-- name: lock_agent_usage
-- Before insert_token_usage_counted: the write-backs of one agent's runs take turns from here to their
-- COMMIT, so each count includes the tokens of those before it, in any process. Taken after the record
-- locks and in (user, agent) order, so two batches never wait for each other crosswise.
SELECT pg_advisory_xact_lock(hashtextextended('mana_ai.agent_usage:' || k.u || ':' || k.a, 0))
FROM (SELECT DISTINCT u, a FROM unnest(%(user_ids)s::text[], %(agent_ids)s::text[]) AS t(u, a) ORDER BY 1, 2) k

-- name: insert_token_usage_counted
-- The same for an agent with a daily cap, answering its 24 h usage with these tokens (the budget gauge and
-- its warning). Under lock_agent_usage, earlier write-backs of the agent have committed or are earlier
-- statements of this transaction: both are counted.
WITH recorded AS (
    INSERT INTO mana_ai.token_usage (user_id, agent_id, mission_id, tokens_used)
    VALUES (%(user_id)s, %(agent_id)s, %(mission_id)s, %(tokens)s)
    RETURNING tokens_used
)
SELECT ((SELECT coalesce(sum(t.tokens_used), 0) FROM mana_ai.token_usage t
         WHERE t.user_id = %(user_id)s AND t.agent_id = %(agent_id)s AND t.ts > now() - interval '24 hours')
        + (SELECT tokens_used FROM recorded))::bigint AS used

-- name: prune_token_usage
DELETE FROM mana_ai.token_usage WHERE ts < now() - %(retention)s::interval

-- name: token_usage_since
SELECT coalesce(sum(tokens_used), 0)::bigint AS tokens
FROM mana_ai.token_usage
WHERE user_id = %(user_id)s AND agent_id = %(agent_id)s AND ts > now() - %(window)s::interval

-- name: insert_audit
INSERT INTO mana_ai.decrypt_audit (user_id, mission_id, iteration_id, table_name, record_id, status, reason)
VALUES (%(user_id)s, %(mission_id)s, %(iteration_id)s, %(table)s, %(record_id)s, %(status)s, %(reason)s)

-- name: read_audit
SELECT id::text AS id, mission_id, iteration_id, table_name, record_id, status, reason, ts
FROM mana_ai.decrypt_audit
WHERE user_id = %(user_id)s AND (%(mission_id)s::text IS NULL OR mission_id = %(mission_id)s)
ORDER BY ts DESC, id DESC
LIMIT %(limit)s

-- research jobs ------------------------------------------------------------------------------------------
-- Pending deep-research jobs, one row per mission while its job runs (SPEC 8.2). Only research/jobs.py
-- uses these.

-- name: research_job_get
-- The pending job of one mission, if any.
SELECT task_id, provider_id, submitted_at, last_polled_at
FROM mana_ai.mission_research_jobs
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s

-- name: research_job_save
-- Record a submitted job; a leftover row of the same mission is replaced (its job is no longer awaited).
INSERT INTO mana_ai.mission_research_jobs (user_id, mission_id, task_id, provider_id)
VALUES (%(user_id)s, %(mission_id)s, %(task_id)s, %(provider_id)s)
ON CONFLICT (user_id, mission_id) DO UPDATE SET
    task_id = EXCLUDED.task_id, provider_id = EXCLUDED.provider_id, submitted_at = now(), last_polled_at = NULL
RETURNING task_id, provider_id, submitted_at, last_polled_at

-- name: research_job_touch
-- Note a poll that found the job still running.
UPDATE mana_ai.mission_research_jobs SET last_polled_at = now()
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND task_id = %(task_id)s

-- name: research_job_delete
-- Forget a finished or abandoned job; the task id keeps a newer job of the same mission in place.
DELETE FROM mana_ai.mission_research_jobs
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND task_id = %(task_id)s

-- ===== privacy: mission key grants (mana_ai.privacy, see docs/privacy.md) ================================

-- Grants and their sealed copies live in mana_ai.mission_grants / mission_grant_copies (migration 0007,
-- FORCE row-level security): every query runs inside with_user. Only privacy/grant_store.py uses these.

-- name: grant_get
-- The current grant of one mission.
SELECT mission_id, grant_id, grant_json, key_box, expires_at, created_at, updated_at
FROM mana_ai.mission_grants
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s

-- name: grant_list
-- The current grants of the user, newest first.
SELECT mission_id, grant_id, grant_json, key_box, expires_at, created_at, updated_at
FROM mana_ai.mission_grants
WHERE user_id = %(user_id)s
ORDER BY updated_at DESC, mission_id
LIMIT %(limit)s

-- name: grant_upsert
-- Store a mission's grant, replacing an earlier one (its copies are removed by grant_copies_clear).
INSERT INTO mana_ai.mission_grants (user_id, mission_id, grant_id, grant_json, key_box, expires_at)
VALUES (%(user_id)s, %(mission_id)s, %(grant_id)s, %(grant_json)s, %(key_box)s, %(expires_at)s)
ON CONFLICT (user_id, mission_id) DO UPDATE SET
    grant_id = EXCLUDED.grant_id, grant_json = EXCLUDED.grant_json, key_box = EXCLUDED.key_box,
    expires_at = EXCLUDED.expires_at, created_at = now(), updated_at = now()

-- name: grant_touch
-- Note that the copies of the current grant changed.
UPDATE mana_ai.mission_grants SET updated_at = now()
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s

-- name: grant_delete
-- Revoke: the grant and (ON DELETE CASCADE) all its copies.
DELETE FROM mana_ai.mission_grants WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s
RETURNING grant_id

-- name: grant_copies_clear
-- Remove every copy of a mission (before the copies of a new grant are written).
DELETE FROM mana_ai.mission_grant_copies WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s

-- name: grant_copy_upsert
-- Store (or replace) the copy of one record for the mission's current grant.
INSERT INTO mana_ai.mission_grant_copies
    (user_id, mission_id, grant_id, table_name, record_id, sealed, source_field_meta)
VALUES (%(user_id)s, %(mission_id)s, %(grant_id)s, %(table)s, %(record_id)s, %(sealed)s, %(meta)s)
ON CONFLICT (user_id, mission_id, table_name, record_id) DO UPDATE SET
    grant_id = EXCLUDED.grant_id, sealed = EXCLUDED.sealed, source_field_meta = EXCLUDED.source_field_meta,
    updated_at = now()

-- name: grant_copy_delete
-- Remove the copy of one record (its source is gone).
DELETE FROM mana_ai.mission_grant_copies
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND table_name = %(table)s
  AND record_id = %(record_id)s

-- name: grant_copy_get
-- The copy of one record made for the given grant.
SELECT table_name, record_id, sealed, source_field_meta
FROM mana_ai.mission_grant_copies
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND grant_id = %(grant_id)s
  AND table_name = %(table)s AND record_id = %(record_id)s

-- name: grant_copies_meta
-- The copies of a mission without their sealed text (what refreshGrant compares against).
SELECT grant_id, table_name, record_id, source_field_meta, updated_at
FROM mana_ai.mission_grant_copies
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s
ORDER BY table_name, record_id

-- workbench ----------------------------------------------------------------------------------------------
-- Proposals, decisions, domain events and the workbench's read models (src/mana_ai/workbench). The
-- decision and event tables have FORCE row-level security: those queries run inside with_user.

-- name: workbench_steps
-- Plan steps of server iterations in the given statuses, one page at a time, grouped by mission (the mission
-- with the newest such iteration first). %(expired)s picks steps whose iteration started before %(cutoff)s
-- (true) or not (false). The page is cut here, so the inbox costs the same with 5 or 500 open proposals.
WITH steps AS (
    SELECT s.mission_id, s.record->>'title' AS mission_title, s.record->>'agentId' AS agent_id,
           it.value->>'id' AS iteration_id, coalesce(it.value->>'startedAt', '') AS started_at,
           it.value->>'summary' AS iteration_summary, st.value AS step, st.ord AS step_ord
    FROM mana_ai.mission_snapshots s
    CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(s.record->'iterations') = 'array'
                                                 THEN s.record->'iterations' ELSE '[]'::jsonb END) AS it(value)
    CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(it.value->'plan') = 'array'
                                                 THEN it.value->'plan' ELSE '[]'::jsonb END)
        WITH ORDINALITY AS st(value, ord)
    WHERE s.user_id = %(user_id)s AND NOT s.deleted AND s.record->>'deletedAt' IS NULL
      AND jsonb_typeof(it.value) = 'object' AND it.value->>'source' = 'server'
      AND jsonb_typeof(st.value) = 'object' AND st.value->>'status' = ANY(%(statuses)s::text[])
      AND st.value->'intent'->>'kind' = 'toolCall'
      AND (%(mission_id)s::text IS NULL OR s.mission_id = %(mission_id)s)
      AND ((coalesce(it.value->>'startedAt', '9999') < %(cutoff)s) = %(expired)s)
)
SELECT x.mission_id, x.mission_title, x.agent_id, x.iteration_id, x.started_at, x.iteration_summary,
       x.step, x.step_ord, a.record->>'name' AS agent_name, a.record->>'avatar' AS agent_avatar,
       count(*) OVER () AS total
FROM (SELECT steps.*, max(started_at) OVER (PARTITION BY mission_id) AS newest FROM steps) x
LEFT JOIN mana_ai.agent_snapshots a ON a.user_id = %(user_id)s AND a.agent_id = x.agent_id
ORDER BY x.newest DESC, x.mission_id, x.started_at DESC, x.iteration_id, x.step_ord
LIMIT %(limit)s OFFSET %(offset)s

-- name: workbench_iterations
-- Server and browser iterations of the user's missions, newest first, for the timeline.
SELECT s.mission_id, s.record->>'title' AS mission_title, s.record->>'agentId' AS agent_id,
       it.value AS iteration, coalesce(it.value->>'startedAt', '') AS started_at
FROM mana_ai.mission_snapshots s
CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(s.record->'iterations') = 'array'
                                             THEN s.record->'iterations' ELSE '[]'::jsonb END) AS it(value)
WHERE s.user_id = %(user_id)s AND NOT s.deleted AND jsonb_typeof(it.value) = 'object'
  AND (%(mission_id)s::text IS NULL OR s.mission_id = %(mission_id)s)
  AND (%(agent_id)s::text IS NULL OR s.record->>'agentId' = %(agent_id)s)
ORDER BY started_at DESC
LIMIT %(limit)s

-- name: workbench_claim_decision
-- The idempotency gate: the first decision on a step inserts its row; any later one finds it taken.
INSERT INTO mana_ai.proposal_decisions
    (user_id, mission_id, iteration_id, step_id, agent_id, tool_name, module, decision, outcome, params,
     feedback, decided_by)
VALUES (%(user_id)s, %(mission_id)s, %(iteration_id)s, %(step_id)s, %(agent_id)s, %(tool_name)s, %(module)s,
        %(decision)s, %(outcome)s, %(params)s, %(feedback)s, %(decided_by)s)
ON CONFLICT DO NOTHING
RETURNING decided_at

-- name: workbench_finish_decision
UPDATE mana_ai.proposal_decisions SET outcome = %(outcome)s, error = %(error)s, records = %(records)s
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND iteration_id = %(iteration_id)s
  AND step_id = %(step_id)s

-- name: workbench_decision
SELECT mission_id, iteration_id, step_id, agent_id, tool_name, module, decision, outcome, params, feedback,
       error, records, decided_by, decided_at
FROM mana_ai.proposal_decisions
WHERE user_id = %(user_id)s AND mission_id = %(mission_id)s AND iteration_id = %(iteration_id)s
  AND step_id = %(step_id)s

-- name: workbench_decisions
-- The user's decisions, newest first, optionally filtered (timeline).
SELECT mission_id, iteration_id, step_id, agent_id, tool_name, module, decision, outcome, params, feedback,
       error, records, decided_by, decided_at
FROM mana_ai.proposal_decisions
WHERE user_id = %(user_id)s
  AND (%(mission_id)s::text IS NULL OR mission_id = %(mission_id)s)
  AND (%(agent_id)s::text IS NULL OR agent_id = %(agent_id)s)
  AND (%(module)s::text IS NULL OR module = %(module)s)
ORDER BY decided_at DESC
LIMIT %(limit)s

-- name: workbench_insert_event
INSERT INTO mana_ai.domain_events
    (user_id, event_type, app_id, table_name, record_id, payload, mission_id, iteration_id, step_id, agent_id,
     module)
VALUES (%(user_id)s, %(event_type)s, %(app_id)s, %(table)s, %(record_id)s, %(payload)s, %(mission_id)s,
        %(iteration_id)s, %(step_id)s, %(agent_id)s, %(module)s)

-- name: workbench_events
-- The user's domain events, newest first, optionally filtered (timeline, tests, CLI).
SELECT id, event_type, app_id, table_name, record_id, payload, mission_id, iteration_id, step_id, agent_id,
       module, ts
FROM mana_ai.domain_events
WHERE user_id = %(user_id)s
  AND (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
  AND (%(mission_id)s::text IS NULL OR mission_id = %(mission_id)s)
  AND (%(agent_id)s::text IS NULL OR agent_id = %(agent_id)s)
  AND (%(module)s::text IS NULL OR module = %(module)s)
ORDER BY ts DESC, id DESC
LIMIT %(limit)s

-- name: workbench_table_rows
-- Every row of one synced table of one user, record by record in log order (replayed in Python with the
-- one LWW function). Runs inside with_user; served by idx_sync_changes_since.
SELECT c.record_id, c.op, c.data, c.field_meta,
       to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_iso
FROM public.sync_changes c
WHERE c.user_id = %(user_id)s AND c.app_id = %(app_id)s AND c.table_name = %(table)s
ORDER BY c.record_id, c.created_at, c.ctid

-- name: workbench_token_usage
-- Tokens per agent and hour over the last seven days (the chart buckets them further).
SELECT agent_id, date_trunc('hour', ts) AS bucket, sum(tokens_used)::bigint AS tokens
FROM mana_ai.token_usage
WHERE user_id = %(user_id)s AND ts > %(since)s
GROUP BY agent_id, date_trunc('hour', ts)

-- name: claim_runs
-- Many claims in one statement (one round trip, one transaction): mana_ai.claim_mission_run for each
-- (user, mission) in the order given. Every call sees the runs the earlier ones inserted, so an agent's
-- concurrency limit holds inside the batch as across batches. Its columns are the function's, as claim_run's.
SELECT c.*
FROM unnest(%(user_ids)s::text[], %(mission_ids)s::text[], %(due_ats)s::text[], %(agent_ids)s::text[],
            %(max_concurrent)s::int[], %(max_tokens)s::bigint[])
     WITH ORDINALITY AS k(user_id, mission_id, due_at, agent_id, max_concurrent, max_tokens, ord)
CROSS JOIN LATERAL mana_ai.claim_mission_run(k.user_id, k.mission_id, k.due_at, k.agent_id, k.max_concurrent,
                                             k.max_tokens, %(owner)s, %(lease)s) AS c
ORDER BY k.ord

-- Batched write-back (runner/writeback.py): several missions of several users in one transaction, sent
-- as one multi-statement round trip per phase. Per user: set_current_user, then that user's statements.

-- name: set_current_user
SELECT set_config('app.current_user_id', %(user_id)s, true)

-- name: lock_records
-- lock_record for several records of one user, taken in id order.
SELECT pg_advisory_xact_lock(hashtextextended('mana_ai.record:' || %(user_id)s || ':' || r.id, 0))
FROM (SELECT DISTINCT unnest(%(record_ids)s::text[]) AS id ORDER BY 1) r

-- name: records_rows
-- record_rows for several records of one user, record by record in log order.
SELECT c.record_id, c.op, c.data, c.field_meta,
       to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_iso
FROM public.sync_changes c
WHERE c.table_name = %(table)s AND c.record_id = ANY(%(record_ids)s::text[]) AND c.app_id = %(app_id)s
  AND c.user_id = %(user_id)s
ORDER BY c.record_id, c.created_at, c.ctid

-- name: mark_iteration
-- A server iteration we wrote (step_id '') or a step decision we made (issue 12: restoring lost ones).
INSERT INTO mana_ai.iteration_marks (user_id, mission_id, iteration_id, step_id, status)
VALUES (%(user_id)s, %(mission_id)s, %(iteration_id)s, %(step_id)s, %(status)s)
ON CONFLICT (user_id, mission_id, iteration_id, step_id) DO UPDATE SET status = EXCLUDED.status, marked_at = now()

-- name: marks_for_missions
SELECT m.user_id, m.mission_id, m.iteration_id, m.step_id, m.status
FROM mana_ai.iteration_marks m
JOIN unnest(%(users)s::text[], %(ids)s::text[]) AS k(user_id, mission_id)
  ON m.user_id = k.user_id AND m.mission_id = k.mission_id

-- name: restore_checks
-- In the refresh's transaction: queue the changed missions that have marks, and list every queued one
-- (also those an earlier refresh queued and could not check).
WITH queued AS (
    INSERT INTO mana_ai.restore_pending (user_id, mission_id)
    SELECT DISTINCT m.user_id, m.mission_id
    FROM mana_ai.iteration_marks m
    JOIN unnest(%(users)s::text[], %(ids)s::text[]) AS k(user_id, mission_id)
      ON m.user_id = k.user_id AND m.mission_id = k.mission_id
    ON CONFLICT (user_id, mission_id) DO UPDATE SET queued_at = EXCLUDED.queued_at
    RETURNING user_id, mission_id, queued_at
)
SELECT user_id, mission_id, queued_at::text FROM queued
UNION ALL
SELECT p.user_id, p.mission_id, p.queued_at::text FROM mana_ai.restore_pending p
WHERE NOT EXISTS (SELECT 1 FROM queued q WHERE q.user_id = p.user_id AND q.mission_id = p.mission_id)

-- name: restore_checks_done
-- Dequeue what was checked, unless queued again since (a later refresh's change is checked by it, too).
DELETE FROM mana_ai.restore_pending p
USING unnest(%(users)s::text[], %(ids)s::text[], %(queued)s::text[]) AS k(user_id, mission_id, queued_at)
WHERE p.user_id = k.user_id AND p.mission_id = k.mission_id AND p.queued_at = k.queued_at::timestamptz
