-- Seat holds with a payment deadline.
--
-- A goods with hold_seconds > 0 gives seats as holds: a booking that wins seats (at
-- its first decision or promoted from the waitlist) is `held` until hold_expires_at:
-- the later of the stream entry time of the request whose decision gave it the seats
-- and the decision's own time (a backlog never eats into a hold), plus hold_seconds.
-- A `confirm` request of its user that arrived (stream entry time)
-- before the deadline makes it `confirmed`; an `expire` request, which the shard's
-- owning worker appends once the deadline has passed, makes it `expired` and gives
-- its seats to the waitlist. Either records itself in hold_ended_by / hold_ended_at.
-- A held booking holds its seats (booked_count counts them) and is live (one per
-- user and goods).
--
-- Constraints on bookings and booking_requests are added NOT VALID (rows written
-- before are not rechecked, so the decision log is not scanned under a lock); the
-- unique index is rebuilt with holds, which locks bookings for as long as that takes:
-- run this migration between sales.
ALTER TABLE goods
    ADD COLUMN hold_seconds INTEGER NOT NULL DEFAULT 0
        CHECK (hold_seconds BETWEEN 0 AND 86400);

ALTER TABLE bookings
    DROP CONSTRAINT bookings_status_check,
    ADD CONSTRAINT bookings_status_check
        CHECK (status IN ('confirmed', 'held', 'waitlisted', 'cancelled', 'expired')) NOT VALID,
    ADD COLUMN hold_expires_at TIMESTAMPTZ,
    ADD COLUMN hold_ended_at   TIMESTAMPTZ,
    ADD COLUMN hold_ended_by   UUID,
    ADD CONSTRAINT bookings_hold_has_a_deadline
        CHECK (status NOT IN ('held', 'expired') OR hold_expires_at IS NOT NULL) NOT VALID,
    ADD CONSTRAINT bookings_hold_end_recorded
        CHECK ((hold_ended_at IS NULL) = (hold_ended_by IS NULL)) NOT VALID,
    ADD CONSTRAINT bookings_expiry_recorded
        CHECK (status <> 'expired' OR hold_ended_by IS NOT NULL) NOT VALID;

-- One live booking per user and goods, holds included (same name as before).
CREATE UNIQUE INDEX bookings_one_live_per_user_v8
    ON bookings (goods_id, user_id) WHERE status IN ('confirmed', 'held', 'waitlisted');
DROP INDEX bookings_one_live_per_user;
ALTER INDEX bookings_one_live_per_user_v8 RENAME TO bookings_one_live_per_user;

-- The expiry scan: holds by deadline.
CREATE INDEX bookings_holds_by_deadline ON bookings (hold_expires_at) WHERE status = 'held';
-- What a confirm or an expiry changed, for a worker that takes it over decided.
CREATE INDEX bookings_hold_ended_by_request ON bookings (hold_ended_by)
    WHERE hold_ended_by IS NOT NULL;

ALTER TABLE booking_requests
    DROP CONSTRAINT booking_requests_kind_check,
    ADD CONSTRAINT booking_requests_kind_check
        CHECK (kind IN ('book', 'cancel', 'limit', 'confirm', 'expire')) NOT VALID,
    DROP CONSTRAINT booking_requests_decision_check,
    ADD CONSTRAINT booking_requests_decision_check
        CHECK (decision IN ('confirmed', 'held', 'waitlisted', 'rejected', 'cancelled',
                            'applied', 'expired')) NOT VALID,
    ADD CONSTRAINT booking_requests_held_is_a_booking
        CHECK (decision <> 'held' OR kind = 'book') NOT VALID,
    ADD CONSTRAINT booking_requests_expired_is_an_expiry
        CHECK ((decision = 'expired') = (kind = 'expire' AND reason IS NULL)) NOT VALID;
