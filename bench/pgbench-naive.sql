-- The original TicketNest's shape: one transaction and one row lock per booking.
BEGIN;
SELECT booked_count FROM bench_goods WHERE id = 1 FOR UPDATE;
INSERT INTO bench_bookings (goods_id, user_id, request_id, quantity, status, position)
VALUES (1, nextval('bench_user_seq'), gen_random_uuid(), 1, 'waitlisted', 0);
UPDATE bench_goods SET decided_count = decided_count + 1 WHERE id = 1;
COMMIT;
