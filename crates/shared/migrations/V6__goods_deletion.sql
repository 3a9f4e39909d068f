-- An organizer removes a goods that holds no live booking. The row stays (soft
-- delete): its decision log and its cancelled bookings keep pointing at it. A deleted
-- goods is invisible to the API and absent to the worker, which rejects requests for
-- it `goods_not_found`.
ALTER TABLE goods
    ADD COLUMN deleted_at TIMESTAMPTZ,
    ADD COLUMN deleted_by BIGINT REFERENCES users (id),
    ADD CONSTRAINT goods_deletion_recorded CHECK ((deleted_at IS NULL) = (deleted_by IS NULL));
