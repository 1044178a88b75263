-- Hardening (issue 14).

-- Derived state wiped by hand (a DBA truncating the mana_ai tables to force a rebuild) repairs itself: when
-- the refresh finds no cursor row, it calls this function, which rebuilds the feed from sync_changes (the
-- source of truth), empties the snapshots and starts the cursor from zero, so the next refresh folds the
-- whole history again. SECURITY DEFINER: the service role cannot read other users' sync rows (row-level
-- security), the function's owner (the role that ran `mana-ai migrate`) can. Returns whether it rebuilt.
CREATE OR REPLACE FUNCTION mana_ai.restore_refresh_cursor() RETURNS BOOLEAN
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, mana_ai SET row_security = off AS
$$
BEGIN
    -- Callers hold the refresh lock; this one also serialises against a concurrent restore.
    PERFORM pg_advisory_xact_lock(7234002);
    IF EXISTS (SELECT 1 FROM mana_ai.refresh_cursor WHERE name = 'snapshots') THEN
        RETURN false;
    END IF;
    TRUNCATE mana_ai.sync_feed, mana_ai.mission_snapshots, mana_ai.agent_snapshots;
    -- xid 0: inside the window of the very refresh that called this, which folds them in its transaction.
    INSERT INTO mana_ai.sync_feed (xid, change_id, user_id, table_name, record_id, op, data, field_meta, created_at)
    SELECT '0'::xid8, id, user_id, table_name, record_id, op, data, field_meta, created_at
    FROM public.sync_changes
    WHERE app_id = 'ai' AND table_name IN ('aiMissions', 'agents')
    ORDER BY created_at, id;
    INSERT INTO mana_ai.refresh_cursor (name, horizon) VALUES ('snapshots', '0'::xid8);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION mana_ai.restore_refresh_cursor() FROM PUBLIC;
