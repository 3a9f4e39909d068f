-- An optional sale window per goods: bookings are taken from sale_opens_at
-- (inclusive) until sale_closes_at (exclusive). The API refuses requests outside it
-- without enqueuing them; the worker, which decides by each request's arrival (its
-- stream entry time), rejects any that a stale API cache let through, so nothing is
-- ever sold outside the window.
--
-- Bounds are whole milliseconds (the precision of stream entry times) between 1970
-- and 9999, never 'infinity': every reader can hold them, and the worker's
-- millisecond arithmetic never fails on them (which would stall the shard).
ALTER TABLE goods
    ADD COLUMN sale_opens_at  TIMESTAMPTZ,
    ADD COLUMN sale_closes_at TIMESTAMPTZ,
    ADD CONSTRAINT goods_sale_window CHECK (sale_opens_at < sale_closes_at),
    ADD CONSTRAINT goods_sale_opens_at_range CHECK (
        sale_opens_at >= '1970-01-01T00:00:00Z' AND sale_opens_at < '10000-01-01T00:00:00Z'
        AND date_trunc('milliseconds', sale_opens_at) = sale_opens_at),
    ADD CONSTRAINT goods_sale_closes_at_range CHECK (
        sale_closes_at >= '1970-01-01T00:00:00Z' AND sale_closes_at < '10000-01-01T00:00:00Z'
        AND date_trunc('milliseconds', sale_closes_at) = sale_closes_at);
