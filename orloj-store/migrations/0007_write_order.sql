-- A write used to bump the store revision first and then write its row, holding the
-- `store_revision` row lock (which orders all writers until commit) through the costliest part
-- of the statement: the row's new payload, its indexes, its TOAST. The write statements now
-- write the row first and take the revision last, for the event only, so writers queue on that
-- lock only for the event insert and the commit.
--
-- The resource rows therefore no longer carry the store revision of their last write. What the
-- column was for, the claim order (least recently written first), only needs a write order:
-- `write_order` comes from a sequence, which takes no lock that lasts until commit.

CREATE SEQUENCE orloj_write_order AS BIGINT;
-- Above every value the rows already have, so existing rows keep their place in the order.
SELECT setval('orloj_write_order', (SELECT revision FROM store_revision) + 1);

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'agents', 'agent_systems', 'model_endpoints', 'tools', 'secrets', 'memories', 'mcp_servers',
    'agent_policies', 'agent_roles', 'tool_permissions', 'tool_approvals', 'tasks',
    'task_schedules', 'task_webhooks', 'workers'
  ] LOOP
    EXECUTE format('ALTER TABLE %I RENAME COLUMN revision TO write_order', t);
  END LOOP;
END
$$;
