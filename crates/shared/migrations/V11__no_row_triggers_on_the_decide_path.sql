-- The worker's batch statement writes hundreds of bookings and decision-log rows at a
-- time, and each foreign key on them ran a trigger per row: a query of its own
-- (`SELECT 1 ... FOR KEY SHARE`), planned and started per row. Measured with `perf`
-- on the PostgreSQL backend writing batches of 500: 37% of its CPU was those
-- triggers. What they proved, the batch transaction already holds:
--   * the goods row is locked FOR UPDATE (and a goods gone is `goods_not_found`);
--   * every user is read in the same transaction (and a user gone is `user_not_found`);
--   * a decision's booking is written by the same statement, or read under the goods'
--     row lock.
-- What they guarded against besides (a referenced row deleted while or after a booking
-- names it) cannot happen any more: users, goods, bookings and the decision log are
-- never deleted. Users and goods are deleted softly (`deleted_at`), bookings end as
-- `cancelled` or `expired`, and decisions are final. The triggers below refuse a DELETE
-- or TRUNCATE of any of them, once per statement (nothing is paid per row).
-- `ticketnest-admin verify` (shared::audit) checks that every decision's booking, and
-- every booking's goods and users, exist.
ALTER TABLE bookings
    DROP CONSTRAINT bookings_goods_id_fkey,
    DROP CONSTRAINT bookings_user_id_fkey,
    DROP CONSTRAINT bookings_cancelled_by_fkey;
ALTER TABLE booking_requests
    DROP CONSTRAINT booking_requests_booking_id_fkey;

CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are never deleted', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'users and goods are deleted softly (deleted_at); bookings end cancelled or expired; decisions are final';
END
$$;

CREATE TRIGGER users_never_deleted BEFORE DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER goods_never_deleted BEFORE DELETE OR TRUNCATE ON goods
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER bookings_never_deleted BEFORE DELETE OR TRUNCATE ON bookings
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER booking_requests_never_deleted BEFORE DELETE OR TRUNCATE ON booking_requests
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete();

-- Also under session_replication_role = replica (a restore with --disable-triggers,
-- logical replication, a bulk edit), as V3's user triggers: a foreign key refused a
-- TRUNCATE of a referenced table whatever that setting said.
ALTER TABLE users ENABLE ALWAYS TRIGGER users_never_deleted;
ALTER TABLE goods ENABLE ALWAYS TRIGGER goods_never_deleted;
ALTER TABLE bookings ENABLE ALWAYS TRIGGER bookings_never_deleted;
ALTER TABLE booking_requests ENABLE ALWAYS TRIGGER booking_requests_never_deleted;
