-- Wakes idle workers at once when a task becomes claimable without waiting for a time
-- (created, released, or set back to Pending with no retry time), so they need not poll
-- often. What only time makes claimable (retry times, expired leases) is left to their poll.
-- NOTIFY is delivered on commit; identical notifications of one transaction are sent once.
CREATE FUNCTION orloj_notify_task_claimable() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM pg_notify('orloj_task_claimable', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_claimable
  AFTER INSERT OR UPDATE ON tasks
  FOR EACH ROW
  WHEN (NEW.mode <> 'template' AND (
         (NEW.status_phase IN ('', 'pending') AND NEW.next_attempt_at IS NULL)
      OR (NEW.status_phase = 'running' AND NEW.claimed_by = '')))
  EXECUTE FUNCTION orloj_notify_task_claimable();
