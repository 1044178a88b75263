-- Mission grants outside the sync log (issue 13, docs/privacy.md). The web app pulls every table of app `ai`
-- from the sync log, and its sync throws on a table it does not know, so the sealed copies of granted records
-- must not live there. They live here, one user's rows each, under FORCE row-level security, written through
-- the JWT-authenticated grant API (or the CLI) and read by the runner inside Database.with_user. Idempotent.

-- The current grant of a mission: its JSON as issued (v2: the terms are bound into the wrap) and the data key
-- sealed under the user's master key (key_box; only the user's client can open it, for refreshGrant).
CREATE TABLE IF NOT EXISTS mana_ai.mission_grants (
    user_id    TEXT NOT NULL,
    mission_id TEXT NOT NULL,
    grant_id   TEXT NOT NULL,
    grant_json JSONB NOT NULL,
    key_box    TEXT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, mission_id)
);
ALTER TABLE mana_ai.mission_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE mana_ai.mission_grants FORCE ROW LEVEL SECURITY;

-- One sealed copy per granted record (and the mission's text, the agent's persona) of the current grant.
CREATE TABLE IF NOT EXISTS mana_ai.mission_grant_copies (
    user_id           TEXT NOT NULL,
    mission_id        TEXT NOT NULL,
    grant_id          TEXT NOT NULL,
    table_name        TEXT NOT NULL,
    record_id         TEXT NOT NULL,
    sealed            TEXT NOT NULL,
    source_field_meta JSONB NOT NULL DEFAULT '{}',
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, mission_id, table_name, record_id),
    FOREIGN KEY (user_id, mission_id) REFERENCES mana_ai.mission_grants (user_id, mission_id) ON DELETE CASCADE
);
ALTER TABLE mana_ai.mission_grant_copies ENABLE ROW LEVEL SECURITY;
ALTER TABLE mana_ai.mission_grant_copies FORCE ROW LEVEL SECURITY;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'mana_ai' AND tablename = 'mission_grants'
                   AND policyname = 'mission_grants_user_scope') THEN
        CREATE POLICY mission_grants_user_scope ON mana_ai.mission_grants
            USING (user_id = current_setting('app.current_user_id', true))
            WITH CHECK (user_id = current_setting('app.current_user_id', true));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'mana_ai' AND tablename = 'mission_grant_copies'
                   AND policyname = 'mission_grant_copies_user_scope') THEN
        CREATE POLICY mission_grant_copies_user_scope ON mana_ai.mission_grant_copies
            USING (user_id = current_setting('app.current_user_id', true))
            WITH CHECK (user_id = current_setting('app.current_user_id', true));
    END IF;
END
$$;

-- Copies written the old way (ai/missionGrantRecords in the sync log) break the web app's sync
-- (InvalidTableError on every push of app `ai`) and were sealed under the v1 mission key, which the app
-- can never produce. They are removed; their grants stay on the missions and the runner reads no copy for
-- them, so their encrypted records are audited `resealed-copy-missing` until the user grants again.
SET LOCAL row_security = off;
DELETE FROM public.sync_changes WHERE app_id = 'ai' AND table_name = 'missionGrantRecords';
SET LOCAL row_security = on;
