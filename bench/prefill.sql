-- Fills a migrated, empty TicketNest database with past sales: :goods goods of
-- :per_goods seats each, every seat booked and confirmed, with its decision-log row,
-- as the worker writes them (request ids time-ordered like the API's UUIDv7, stream
-- ids in order, positions 1..:per_goods, counters matching). :users users (at least
-- :per_goods) book them, each goods by a different run of them. For measuring the
-- decide rate with millions of rows already in the tables (issue 13); the result
-- passes `ticketnest-admin verify` (checked at 10 x 1,000).
--
--   psql -d DB -v goods=1000 -v per_goods=10000 -v users=100000 -f bench/prefill.sql
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO users (email, nickname, password_hash)
SELECT 'prefill' || u || '@bench.invalid', 'p' || u, 'x'
FROM generate_series(1, :users) AS u;
CREATE TEMP TABLE prefill_users ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM users WHERE email LIKE 'prefill%@bench.invalid';
CREATE UNIQUE INDEX ON prefill_users (k);

INSERT INTO goods (organizer_id, title, content, price, img_url, show_date, booking_limit,
                   booked_count, decided_count)
SELECT (SELECT id FROM prefill_users WHERE k = 0), 'past sale ' || g, '', 0, '',
       '2030-01-01', :per_goods, :per_goods, :per_goods
FROM generate_series(1, :goods) AS g;
CREATE TEMP TABLE prefill_goods ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY id) - 1 AS g, id FROM goods WHERE title LIKE 'past sale %';

-- One row per seat: goods g, seat k; the user is a run of :per_goods consecutive users
-- starting at a place of its own, so each goods' users are distinct.
CREATE TEMP TABLE prefill_seats ON COMMIT DROP AS
SELECT pg.id AS goods_id, u.id AS user_id, s.k + 1 AS position,
       ('00000000-0000-7000-8000-' || lpad(to_hex(pg.g * :per_goods + s.k), 12, '0'))::uuid AS request_id,
       1600000000000 + pg.g * :per_goods + s.k AS stream_ms,
       pg.g % 16 AS shard
FROM prefill_goods pg
CROSS JOIN generate_series(0, :per_goods - 1) AS s(k)
JOIN prefill_users u ON u.k = (pg.g * 7919 + s.k) % :users;

INSERT INTO bookings (goods_id, user_id, request_id, quantity, status, position)
SELECT goods_id, user_id, request_id, 1, 'confirmed', position FROM prefill_seats
ORDER BY request_id;

INSERT INTO booking_requests (request_id, goods_id, user_id, quantity, shard, stream_id,
  stream_ms, stream_seq, position, decision, booking_id, accepted_at, kind)
SELECT s.request_id, s.goods_id, s.user_id, 1, s.shard, s.stream_ms || '-0', s.stream_ms, 0,
       s.position, 'confirmed', b.id, to_timestamp(s.stream_ms / 1000.0), 'book'
FROM prefill_seats s JOIN bookings b USING (request_id)
ORDER BY s.request_id;
COMMIT;
VACUUM ANALYZE users, goods, bookings, booking_requests;
