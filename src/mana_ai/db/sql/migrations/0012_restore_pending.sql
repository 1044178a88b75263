-- Missions a refresh changed that have marks, to be checked for lost iterations (mana_ai.synclog.restore).
-- Queued in the refresh's own transaction and removed once checked, so a check that did not happen (the
-- database restarting between the refresh's commit and the restore) is made by the next refresh, not only
-- when the mission changes again.
CREATE TABLE IF NOT EXISTS mana_ai.restore_pending (
    user_id    TEXT NOT NULL,
    mission_id TEXT NOT NULL,
    queued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, mission_id)
);
