-- Least-privilege grants for the role the service runs as (replace mana_ai_app with your role name).
-- The role must NOT be a superuser and must NOT have BYPASSRLS: sync_changes and decrypt_audit stay
-- protected by their row-level security policies, and every per-user read runs inside with_user().
-- Run `mana-ai migrate` once as the database owner or an admin before granting.
GRANT USAGE ON SCHEMA mana_ai, mana_ai_queue TO mana_ai_app;
GRANT SELECT, INSERT ON public.sync_changes TO mana_ai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA mana_ai TO mana_ai_app;
REVOKE UPDATE, DELETE, TRUNCATE ON mana_ai.decrypt_audit FROM mana_ai_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA mana_ai TO mana_ai_app;
GRANT EXECUTE ON FUNCTION mana_ai.claim_mission_run(TEXT, TEXT, TEXT, TEXT, INT, BIGINT, TEXT, INTERVAL) TO mana_ai_app;
GRANT EXECUTE ON FUNCTION mana_ai.restore_refresh_cursor() TO mana_ai_app;
GRANT EXECUTE ON FUNCTION mana_ai.reserve_budget_round(TEXT, TEXT, TEXT, TEXT, BIGINT, BIGINT, BIGINT) TO mana_ai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA mana_ai_queue TO mana_ai_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA mana_ai_queue TO mana_ai_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA mana_ai_queue TO mana_ai_app;
