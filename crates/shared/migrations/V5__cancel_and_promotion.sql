-- Cancellation and waitlist promotion.
--
-- A request now has a kind: `book` (asks for seats) or `cancel` (releases the user's
-- live booking of the goods). Both travel through the goods' shard stream and are
-- decided by its owning worker in stream order, so a cancel is ordered with the
-- bookings around it. A cancel's decision is `cancelled` (it released a booking:
-- `booking_id` names it, `quantity` is the seats or places it held) or `rejected`
-- with reason `no_booking` (nothing live; quantity 0).
--
-- booking_requests.decision stays the request's first decision (the log is never
-- rewritten); a booking's current state is bookings.status, which a promotion
-- (waitlisted -> confirmed, promoted_at, promoted_by: the request whose decision
-- freed the seats) or a cancel (-> cancelled, cancelled_at, cancelled_by,
-- cancel_request_id) changes. Both requests are recorded so that a worker taking
-- over a decided cancel can write again the statuses it changed.
ALTER TABLE booking_requests
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'book' CHECK (kind IN ('book', 'cancel')),
    DROP CONSTRAINT booking_requests_quantity_check,
    ADD CONSTRAINT booking_requests_quantity_check
        CHECK (quantity >= 0 AND (kind <> 'book' OR quantity > 0)),
    DROP CONSTRAINT booking_requests_decision_check,
    ADD CONSTRAINT booking_requests_decision_check
        CHECK (decision IN ('confirmed', 'waitlisted', 'rejected', 'cancelled')),
    ADD CONSTRAINT booking_requests_cancelled_is_a_cancel
        CHECK ((decision = 'cancelled') = (kind = 'cancel' AND reason IS NULL));

ALTER TABLE bookings
    ADD COLUMN promoted_at       TIMESTAMPTZ,
    ADD COLUMN promoted_by       UUID,
    ADD COLUMN cancelled_at      TIMESTAMPTZ,
    ADD COLUMN cancelled_by      BIGINT REFERENCES users (id),
    ADD COLUMN cancel_request_id UUID,
    ADD CONSTRAINT bookings_promotion_recorded CHECK (
        (promoted_at IS NULL) = (promoted_by IS NULL)),
    -- NOT VALID: checked for every row written from now on; a row V1 allowed before
    -- (a cancelled booking set by hand) does not stop the migration.
    ADD CONSTRAINT bookings_cancel_recorded CHECK (
        (status = 'cancelled') = (cancelled_at IS NOT NULL AND cancelled_by IS NOT NULL
                                  AND cancel_request_id IS NOT NULL)) NOT VALID,
    -- At most MAX_PER_BOOKING (100) seats per booking, as the API has always let
    -- through: the worker's promotion reads the waitlist one quantity at a time, up
    -- to 100.
    ADD CONSTRAINT bookings_quantity_at_most_100 CHECK (quantity <= 100) NOT VALID;

-- The same bound where quantities come from: a goods' maxPerBooking.
ALTER TABLE goods
    ADD CONSTRAINT goods_max_per_booking_at_most_100 CHECK (max_per_booking <= 100) NOT VALID;

-- The waitlist of one goods, one quantity at a time, in decision order: a promotion
-- reads the head of each quantity's queue (an index range scan with a LIMIT each)
-- instead of the whole waitlist.
CREATE INDEX bookings_waitlist_by_quantity
    ON bookings (goods_id, quantity, position) WHERE status = 'waitlisted';
-- What a cancel changed, for a worker that takes it over decided.
CREATE INDEX bookings_cancelled_by_request ON bookings (cancel_request_id)
    WHERE cancel_request_id IS NOT NULL;
CREATE INDEX bookings_promoted_by_request ON bookings (promoted_by)
    WHERE promoted_by IS NOT NULL;
