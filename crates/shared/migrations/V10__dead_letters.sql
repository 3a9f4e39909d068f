-- Dead letters in PostgreSQL: every entry a worker dead-letters (undecodable, or
-- refused by the database `TICKETNEST_MAX_ATTEMPTS` times) gets a row here, written by
-- the worker in a fenced transaction before the entry is acknowledged, so a dead
-- letter outlives the Redis dead-letter stream's cap and retention, and what an
-- operator does with it (`ticketnest-admin dlq replay|drop`) is recorded: who, when,
-- and (a replay) the request it became.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    shard       int NOT NULL CHECK (shard >= 0),
    -- The entry's id in its shard stream.
    source_id   text NOT NULL,
    reason      text NOT NULL,
    -- The entry's fields as one JSON object of strings (a NUL character, which
    -- PostgreSQL cannot store in text, is replaced by U+FFFD; the Redis copy is exact).
    fields      jsonb NOT NULL,
    -- The request the entry names, when it names one.
    request_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolution  text CHECK (resolution IN ('replayed', 'dropped')),
    resolved_by text,
    resolved_at timestamptz,
    resolution_note text,
    -- A replay's new request (decided like any other; the dead letter's own decision,
    -- if it had one, stays final).
    replayed_as uuid,
    UNIQUE (shard, source_id),
    CONSTRAINT dead_letters_resolution_is_complete CHECK (
        (resolution IS NULL AND resolved_by IS NULL AND resolved_at IS NULL AND replayed_as IS NULL)
        OR (resolution = 'dropped' AND resolved_by IS NOT NULL AND resolved_at IS NOT NULL AND replayed_as IS NULL)
        OR (resolution = 'replayed' AND resolved_by IS NOT NULL AND resolved_at IS NOT NULL AND replayed_as IS NOT NULL)
    )
);

-- `dlq list` and `status`: the letters still waiting for an operator.
CREATE INDEX dead_letters_open ON dead_letters (shard, id) WHERE resolution IS NULL;
-- Whether a request was dead-lettered, and what a replay became.
CREATE INDEX dead_letters_by_request ON dead_letters (request_id) WHERE request_id IS NOT NULL;
