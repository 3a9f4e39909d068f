-- A user's bookings, newest first (GET /api/me/bookings), without scanning the table.
-- Built without CONCURRENTLY (migrations run in a transaction): it blocks writes to
-- bookings while it builds, so run it between sales.
CREATE INDEX bookings_by_user ON bookings (user_id, id);
