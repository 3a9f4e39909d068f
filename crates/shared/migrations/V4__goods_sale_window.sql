-- An optional sale window per goods: bookings are taken from sale_opens_at
-- (inclusive) until sale_closes_at (exclusive). The API refuses requests outside it
-- without enqueuing them; the worker, which decides by each request's arrival (its
-- stream entry time), rejects any that a stale API cache let through, so nothing is
-- ever sold outside the window.
ALTER TABLE goods
    ADD COLUMN sale_opens_at  TIMESTAMPTZ,
    ADD COLUMN sale_closes_at TIMESTAMPTZ,
    ADD CONSTRAINT goods_sale_window CHECK (sale_opens_at < sale_closes_at);
