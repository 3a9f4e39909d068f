-- Settings every process of a deployment must agree on, recorded by the first process
-- that starts. Today: the shard count (`shards`), since goods are placed on shards by
-- `goods_id mod shards`, and a process with another count would put a goods' requests
-- on another stream than its worker reads, silently breaking FIFO.
CREATE TABLE deployment_settings (
    name    TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    set_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
