-- Next to the real mana web app (issue 12). Idempotent.

-- What mana-ai wrote into a mission's iterations: every server iteration (step_id '') and every step
-- decision made in the workbench or CLI (step_id, status). Any device edit re-sends the whole iterations
-- array, so an edit from a device that synced before our write-back drops them from the latest state;
-- after each snapshot refresh the marks of the changed missions are compared with it and what is missing
-- is restored (src/mana_ai/synclog/restore.py). Ids and statuses only, no content; read across users by the
-- refresh like the snapshot tables, so no row-level security.
CREATE TABLE IF NOT EXISTS mana_ai.iteration_marks (
    user_id      TEXT NOT NULL,
    mission_id   TEXT NOT NULL,
    iteration_id TEXT NOT NULL,
    step_id      TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL DEFAULT '',
    marked_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, mission_id, iteration_id, step_id)
);
