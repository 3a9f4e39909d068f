-- TicketNest schema, version 1.
--
-- PostgreSQL is the truth. Invariants it enforces by itself, whatever the code does:
--   * no oversell: goods_seats_within_limit (CHECK on the seat counter);
--   * one live booking per user per goods: bookings_one_live_per_user (partial unique index);
--   * exactly-once effect: booking_requests.request_id is the primary key;
--   * unique email (case-insensitive) and unique nickname among live accounts.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    email         TEXT NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    nickname      TEXT NOT NULL CHECK (char_length(nickname) BETWEEN 1 AND 10),
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'organizer')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Soft delete: bookings keep pointing at the row; tokens of a deleted user stop working.
    deleted_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX users_email_unique ON users (lower(email)) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX users_nickname_unique ON users (nickname) WHERE deleted_at IS NULL;
CREATE INDEX users_deleted ON users (id) WHERE deleted_at IS NOT NULL;

CREATE TABLE goods (
    id              BIGSERIAL PRIMARY KEY,
    organizer_id    BIGINT NOT NULL REFERENCES users (id),
    title           TEXT NOT NULL CHECK (char_length(title) BETWEEN 1 AND 100),
    content         TEXT NOT NULL CHECK (char_length(content) <= 5000),
    price           BIGINT NOT NULL CHECK (price >= 0),
    img_url         TEXT NOT NULL CHECK (char_length(img_url) <= 2048),
    show_date       TIMESTAMPTZ NOT NULL,
    booking_limit   INTEGER NOT NULL CHECK (booking_limit > 0),
    max_per_booking INTEGER NOT NULL DEFAULT 1 CHECK (max_per_booking > 0),
    -- Seats held by confirmed bookings. Written only by the worker, under a row lock.
    booked_count    INTEGER NOT NULL DEFAULT 0,
    -- Requests decided so far; gives each decision its place in the goods' FIFO order.
    decided_count   BIGINT NOT NULL DEFAULT 0 CHECK (decided_count >= 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT goods_seats_within_limit CHECK (booked_count BETWEEN 0 AND booking_limit)
);

-- A booking holds seats (confirmed) or a place in the queue for them (waitlisted).
CREATE TABLE bookings (
    id          BIGSERIAL PRIMARY KEY,
    goods_id    BIGINT NOT NULL REFERENCES goods (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    request_id  UUID NOT NULL UNIQUE,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    status      TEXT NOT NULL CHECK (status IN ('confirmed', 'waitlisted', 'cancelled')),
    -- The request's place in the goods' decision order; the waitlist is served in it.
    position    BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX bookings_one_live_per_user
    ON bookings (goods_id, user_id) WHERE status IN ('confirmed', 'waitlisted');
CREATE INDEX bookings_waitlist ON bookings (goods_id, position) WHERE status = 'waitlisted';

-- The decision log: one row per accepted request, written in the batch transaction.
-- No foreign keys on goods/user: a request for a goods that is gone is still logged.
CREATE TABLE booking_requests (
    request_id   UUID PRIMARY KEY,
    goods_id     BIGINT NOT NULL,
    user_id      BIGINT NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity > 0),
    shard        INTEGER NOT NULL CHECK (shard >= 0),
    -- The Redis stream entry id ("<ms>-<seq>") and its two numbers, for ordering.
    stream_id    TEXT NOT NULL,
    stream_ms    BIGINT NOT NULL,
    stream_seq   BIGINT NOT NULL,
    position     BIGINT,
    decision     TEXT NOT NULL CHECK (decision IN ('confirmed', 'waitlisted', 'rejected')),
    reason       TEXT,
    booking_id   BIGINT REFERENCES bookings (id) ON DELETE SET NULL,
    accepted_at  TIMESTAMPTZ NOT NULL,
    decided_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT booking_requests_reason_iff_rejected CHECK ((decision = 'rejected') = (reason IS NOT NULL))
);
CREATE INDEX booking_requests_by_goods_order ON booking_requests (goods_id, stream_ms, stream_seq);

-- Fencing tokens per shard. A worker takes a new token (fence + 1) when it acquires a
-- shard's lease; every batch transaction checks that its token is still the current
-- one, so a worker that lost its lease cannot commit for the shard afterwards.
CREATE TABLE shard_fences (
    shard       INTEGER PRIMARY KEY CHECK (shard >= 0),
    fence       BIGINT NOT NULL CHECK (fence > 0),
    owner       TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
