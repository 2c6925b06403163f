-- Store-wide revisions and the change log that watches read.
--
-- Every write increments the singleton row in the same transaction as the change. The row lock
-- serializes writers from the increment to commit, so revisions commit in order and a watcher
-- polling `revision > last` can never skip a revision that commits late.
CREATE TABLE store_revision (
  id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
  revision BIGINT NOT NULL
);
INSERT INTO store_revision (id, revision) VALUES (TRUE, 0);

-- One row per write, pruned to the most recent N by the write path.
CREATE TABLE store_events (
  revision BIGINT PRIMARY KEY,
  kind TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  event_type TEXT NOT NULL CHECK (event_type IN ('added', 'updated', 'deleted')),
  payload JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_store_events_kind ON store_events (kind, revision);

-- Wakes watchers; the payload is the revision. NOTIFY is delivered on commit.
CREATE FUNCTION orloj_notify_store_event() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM pg_notify('orloj_store_events', NEW.revision::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER store_events_notify
  AFTER INSERT ON store_events
  FOR EACH ROW EXECUTE FUNCTION orloj_notify_store_event();
