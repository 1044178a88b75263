-- public.sync_changes exactly as mana-sync defines it (SPEC §4.1).
-- In a mana deployment mana-sync owns this table, so everything here runs only when it does not exist yet.
DO $migration$
BEGIN
    IF to_regclass('public.sync_changes') IS NOT NULL THEN
        RAISE NOTICE 'public.sync_changes exists (owned by mana-sync); leaving it as it is';
        RETURN;
    END IF;

    CREATE TABLE public.sync_changes (
        id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
        app_id         TEXT NOT NULL,
        table_name     TEXT NOT NULL,
        record_id      TEXT NOT NULL,
        user_id        TEXT NOT NULL,
        op             TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
        data           JSONB,
        field_meta     JSONB DEFAULT '{}',
        client_id      TEXT NOT NULL,
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        schema_version INT NOT NULL DEFAULT 1,
        actor          JSONB,
        origin         TEXT,
        space_id       TEXT
    );

    CREATE INDEX idx_sync_changes_user_app ON public.sync_changes (user_id, app_id, created_at);
    CREATE INDEX idx_sync_changes_table_record ON public.sync_changes (table_name, record_id, created_at);
    CREATE INDEX idx_sync_changes_since ON public.sync_changes (user_id, app_id, table_name, created_at);
    CREATE INDEX idx_sync_changes_user_space_app_since
        ON public.sync_changes (user_id, space_id, app_id, created_at) WHERE space_id IS NOT NULL;

    ALTER TABLE public.sync_changes ENABLE ROW LEVEL SECURITY;
    ALTER TABLE public.sync_changes FORCE ROW LEVEL SECURITY;

    CREATE POLICY sync_changes_user_isolation ON public.sync_changes
        USING (user_id = current_setting('app.current_user_id', true))
        WITH CHECK (user_id = current_setting('app.current_user_id', true));

    CREATE POLICY sync_changes_space_member_read ON public.sync_changes FOR SELECT
        USING (space_id IS NOT NULL AND space_id = ANY (
            string_to_array(coalesce(current_setting('app.current_user_space_ids', true), ''), ',')));
END
$migration$;
