-- Booking limit changes through the worker, and an optional cap on the waitlist.
--
-- A change to a goods' booking limit is a request of kind `limit` (its organizer is
-- the user, its quantity the new limit). It travels the goods' shard stream and is
-- decided by the owning worker in stream order like a booking: `applied` (the limit
-- is set; seats it frees go to the waitlist in order, promoted_by naming it) or
-- `rejected` with reason `limit_below_booked` (the goods' bookings hold more seats
-- than the new limit). It takes a turn (position), so the limit in force at every
-- turn can be replayed from the log: `limit_before` keeps the limit it replaced.
-- Constraints on booking_requests are added NOT VALID: the decision log is not
-- scanned under a lock (rows written before are not rechecked).
ALTER TABLE booking_requests
    DROP CONSTRAINT booking_requests_kind_check,
    ADD CONSTRAINT booking_requests_kind_check CHECK (kind IN ('book', 'cancel', 'limit')) NOT VALID,
    DROP CONSTRAINT booking_requests_decision_check,
    ADD CONSTRAINT booking_requests_decision_check
        CHECK (decision IN ('confirmed', 'waitlisted', 'rejected', 'cancelled', 'applied')) NOT VALID,
    ADD CONSTRAINT booking_requests_applied_is_a_limit
        CHECK ((decision = 'applied') = (kind = 'limit' AND reason IS NULL)) NOT VALID,
    -- Written by the batch that applied the change, right after its decision row.
    ADD COLUMN limit_before INTEGER,
    ADD CONSTRAINT booking_requests_limit_before_of_applied
        CHECK (limit_before IS NULL OR decision = 'applied') NOT VALID;

-- waitlist_limit: at most this many waitlisted bookings (NULL: no cap); a booking that
-- does not fit the free seats with the waitlist full is rejected `waitlist_full`.
-- waitlisted_count: the goods' waitlisted bookings, kept by the worker like
-- booked_count.
-- maxPerBooking never exceeds the booking limit: the API checks a change against the
-- limit the goods has when it writes, and a limit change lowers maxPerBooking with it.
ALTER TABLE goods
    ADD CONSTRAINT goods_max_per_booking_within_limit
        CHECK (max_per_booking <= booking_limit) NOT VALID,
    ADD COLUMN waitlist_limit INTEGER CHECK (waitlist_limit >= 0),
    ADD COLUMN waitlisted_count INTEGER NOT NULL DEFAULT 0 CHECK (waitlisted_count >= 0);

UPDATE goods g SET waitlisted_count = w.n
FROM (SELECT goods_id, count(*)::int AS n FROM bookings
      WHERE status = 'waitlisted' GROUP BY goods_id) w
WHERE g.id = w.goods_id;
