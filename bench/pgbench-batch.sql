-- The worker's commit shape: one transaction decides a batch of :n requests for one
-- goods: lock the goods row, insert :n bookings and :n decisions set-based, update
-- the counters once, commit.
\set n 100
BEGIN;
SELECT booked_count FROM bench_goods WHERE id = 1 FOR UPDATE;
WITH input AS (
  SELECT nextval('bench_user_seq') AS user_id, gen_random_uuid() AS request_id, g AS ord
  FROM generate_series(1, :n) AS g
), booked AS (
  INSERT INTO bench_bookings (goods_id, user_id, request_id, quantity, status, position)
  SELECT 1, user_id, request_id, 1, 'waitlisted', ord FROM input
  RETURNING id, request_id
)
INSERT INTO bench_decisions (request_id, goods_id, user_id, quantity, decision, booking_id)
SELECT i.request_id, 1, i.user_id, 1, 'waitlisted', b.id FROM input i JOIN booked b USING (request_id);
UPDATE bench_goods SET decided_count = decided_count + :n WHERE id = 1;
COMMIT;
