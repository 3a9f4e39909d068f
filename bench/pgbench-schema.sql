-- Tables shaped like TicketNest's goods, bookings and decision log (same column
-- types, same indexes), without foreign keys to users so pgbench needs no fixtures.
DROP TABLE IF EXISTS bench_decisions, bench_bookings, bench_goods;
DROP SEQUENCE IF EXISTS bench_user_seq;
CREATE SEQUENCE bench_user_seq;
CREATE TABLE bench_goods (
  id BIGINT PRIMARY KEY,
  booking_limit INTEGER NOT NULL,
  booked_count INTEGER NOT NULL DEFAULT 0,
  decided_count BIGINT NOT NULL DEFAULT 0,
  CHECK (booked_count BETWEEN 0 AND booking_limit)
);
INSERT INTO bench_goods (id, booking_limit) VALUES (1, 1000000);
CREATE TABLE bench_bookings (
  id BIGSERIAL PRIMARY KEY,
  goods_id BIGINT NOT NULL REFERENCES bench_goods (id),
  user_id BIGINT NOT NULL,
  request_id UUID NOT NULL UNIQUE,
  quantity INTEGER NOT NULL,
  status TEXT NOT NULL,
  position BIGINT NOT NULL
);
CREATE UNIQUE INDEX bench_one_live ON bench_bookings (goods_id, user_id) WHERE status IN ('confirmed', 'waitlisted');
CREATE TABLE bench_decisions (
  request_id UUID PRIMARY KEY,
  goods_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  quantity INTEGER NOT NULL,
  decision TEXT NOT NULL,
  booking_id BIGINT REFERENCES bench_bookings (id),
  decided_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
