-- Store events wake watchers with one notification per statement, not one per event row.
--
-- Listeners only keep the highest revision notified (they then read every event after the last
-- one they saw), so the rows of one statement need one notification carrying their highest
-- revision. Per row, a batch write of N tasks ran the trigger function N times and queued N
-- distinct notifications (distinct payloads are not merged at commit), each sent to every
-- listening connection and parsed there.
DROP TRIGGER store_events_notify ON store_events;
DROP FUNCTION orloj_notify_store_event();

CREATE FUNCTION orloj_notify_store_events() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
  latest BIGINT;
BEGIN
  SELECT max(revision) INTO latest FROM inserted_events;
  IF latest IS NOT NULL THEN
    PERFORM pg_notify('orloj_store_events', latest::text);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER store_events_notify
  AFTER INSERT ON store_events
  REFERENCING NEW TABLE AS inserted_events
  FOR EACH STATEMENT EXECUTE FUNCTION orloj_notify_store_events();
