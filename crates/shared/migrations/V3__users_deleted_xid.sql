-- Which transaction deleted a user, so that every API process can pick up new
-- deletions without rereading them all (crates/pub-api/src/revocation.rs).
--
-- deleted_at cannot serve: it is the deleting transaction's now(), its start time, so a
-- transaction may commit long after a reader has moved past its deleted_at. A
-- transaction id can: a reader records the oldest transaction still running when it
-- reads (pg_snapshot_xmin of its snapshot); every deletion it could not see was made
-- by a transaction with that id or a newer one, and the next reader asks for exactly
-- those. xid8 is 64 bits wide and never wraps around (PostgreSQL 13 or later).
--
-- A trigger sets it, so every way of deleting a user records it: ticketnest-admin, the
-- tests, an operator's hand-written UPDATE. Users deleted before this migration have
-- none; readers load them with everything else at their first, full, load.
ALTER TABLE users ADD COLUMN deleted_xid xid8;

CREATE FUNCTION users_set_deleted_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NULL THEN
        NEW.deleted_xid := NULL;
    ELSE
        NEW.deleted_xid := pg_current_xact_id();
    END IF;
    RETURN NEW;
END
$$;

-- WHEN clauses keep the function off the common paths: bulk inserts of live users and
-- updates that leave deleted_at alone never call it.
CREATE TRIGGER users_deleted_xid_on_insert BEFORE INSERT ON users
    FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION users_set_deleted_xid();
CREATE TRIGGER users_deleted_xid_on_update BEFORE UPDATE OF deleted_at ON users
    FOR EACH ROW WHEN (OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
    EXECUTE FUNCTION users_set_deleted_xid();

-- ALWAYS: the triggers fire under session_replication_role = replica too (pg_restore
-- --disable-triggers, logical replication, an operator's bulk update done that way).
ALTER TABLE users ENABLE ALWAYS TRIGGER users_deleted_xid_on_insert;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_deleted_xid_on_update;

CREATE INDEX users_deleted_xid ON users (deleted_xid) WHERE deleted_xid IS NOT NULL;
