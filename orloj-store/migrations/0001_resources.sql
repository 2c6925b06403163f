-- Resource tables: one per kind. `payload` holds the whole object (metadata, spec, status);
-- every other column except the timestamps is generated from it, so the indexed copies can
-- never drift from the payload. `revision` is the store-wide revision of the row's last write
-- (claim order: least recently written first).

-- A JSON string value, or '' for anything else (absent, null, number, object...).
CREATE FUNCTION orloj_text(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' ELSE '' END $$;

-- A JSON number as bigint (truncated), or NULL when absent, not a number or out of range.
CREATE FUNCTION orloj_int(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN jsonb_typeof(v) = 'number' AND abs(v::numeric) < 9e18 THEN trunc(v::numeric)::bigint
  END
$$;

-- sha256 of the canonical (jsonb) text of a spec. convert_to is only STABLE because it depends on
-- the database encoding, which cannot change for an existing database.
CREATE FUNCTION orloj_spec_hash(spec jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT encode(sha256(convert_to(coalesce(spec, 'null'::jsonb)::text, 'UTF8')), 'hex') $$;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'agents', 'agent_systems', 'model_endpoints', 'tools', 'secrets', 'memories', 'mcp_servers',
    'agent_policies', 'agent_roles', 'tool_permissions', 'tool_approvals', 'tasks',
    'task_schedules', 'task_webhooks', 'workers'
  ] LOOP
    EXECUTE format($sql$
      CREATE TABLE %I (
        name TEXT COLLATE "C" PRIMARY KEY CHECK (char_length(name) <= 253),
        namespace TEXT COLLATE "C" NOT NULL GENERATED ALWAYS AS
          (coalesce(nullif(orloj_text(payload -> 'metadata' -> 'namespace'), ''), 'default')) STORED,
        status_phase TEXT NOT NULL GENERATED ALWAYS AS
          (lower(orloj_text(payload -> 'status' -> 'phase'))) STORED,
        spec_hash TEXT NOT NULL GENERATED ALWAYS AS (orloj_spec_hash(payload -> 'spec')) STORED,
        revision BIGINT NOT NULL,
        payload JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
      )$sql$, t);
    EXECUTE format('CREATE INDEX %I ON %I (namespace, name)', 'idx_' || t || '_namespace', t);
  END LOOP;
END
$$;

ALTER TABLE model_endpoints
  ADD COLUMN provider TEXT NOT NULL GENERATED ALWAYS AS
    (lower(orloj_text(payload -> 'spec' -> 'provider'))) STORED;

ALTER TABLE tools
  ADD COLUMN risk_level TEXT NOT NULL GENERATED ALWAYS AS
    (lower(orloj_text(payload -> 'spec' -> 'risk_level'))) STORED,
  ADD COLUMN isolation_mode TEXT NOT NULL GENERATED ALWAYS AS
    (lower(orloj_text(payload -> 'spec' -> 'runtime' -> 'isolation_mode'))) STORED;

ALTER TABLE agent_policies
  ADD COLUMN apply_mode TEXT NOT NULL GENERATED ALWAYS AS
    (lower(orloj_text(payload -> 'spec' -> 'apply_mode'))) STORED;

ALTER TABLE tool_permissions
  ADD COLUMN tool_ref TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'tool_ref')) STORED;
CREATE INDEX idx_tool_permissions_tool_ref ON tool_permissions (tool_ref);

ALTER TABLE tool_approvals
  ADD COLUMN task_ref TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'task_ref')) STORED,
  ADD COLUMN tool TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'tool')) STORED;
CREATE INDEX idx_tool_approvals_task_ref ON tool_approvals (task_ref);

ALTER TABLE task_schedules
  ADD COLUMN task_ref TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'task_ref')) STORED,
  ADD COLUMN schedule TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'schedule')) STORED,
  ADD COLUMN suspend BOOLEAN NOT NULL GENERATED ALWAYS AS
    (coalesce(payload -> 'spec' -> 'suspend' = 'true'::jsonb, false)) STORED;
CREATE INDEX idx_task_schedules_task_ref ON task_schedules (task_ref);

ALTER TABLE task_webhooks
  ADD COLUMN task_ref TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'task_ref')) STORED;
CREATE INDEX idx_task_webhooks_task_ref ON task_webhooks (task_ref);

ALTER TABLE workers
  ADD COLUMN region TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'region')) STORED,
  ADD COLUMN current_tasks BIGINT GENERATED ALWAYS AS
    (orloj_int(payload -> 'status' -> 'currentTasks')) STORED,
  ADD COLUMN max_concurrent_tasks BIGINT GENERATED ALWAYS AS
    (orloj_int(payload -> 'spec' -> 'max_concurrent_tasks')) STORED;

-- Tasks: the claim query filters on these. lease_until and next_attempt_at are parsed from the
-- payload by the store on every write (a text-to-timestamp cast cannot be a generated column).
ALTER TABLE tasks
  ADD COLUMN system_ref TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'system')) STORED,
  ADD COLUMN mode TEXT NOT NULL GENERATED ALWAYS AS
    (lower(btrim(orloj_text(payload -> 'spec' -> 'mode')))) STORED,
  ADD COLUMN priority TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'spec' -> 'priority')) STORED,
  ADD COLUMN assigned_worker TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'status' -> 'assignedWorker')) STORED,
  ADD COLUMN claimed_by TEXT NOT NULL GENERATED ALWAYS AS
    (orloj_text(payload -> 'status' -> 'claimedBy')) STORED,
  ADD COLUMN req_region TEXT NOT NULL GENERATED ALWAYS AS
    (lower(btrim(orloj_text(payload -> 'spec' -> 'requirements' -> 'region')))) STORED,
  ADD COLUMN req_gpu BOOLEAN NOT NULL GENERATED ALWAYS AS
    (coalesce(payload -> 'spec' -> 'requirements' -> 'gpu' = 'true'::jsonb, false)) STORED,
  ADD COLUMN req_model TEXT NOT NULL GENERATED ALWAYS AS
    (lower(btrim(orloj_text(payload -> 'spec' -> 'requirements' -> 'model')))) STORED,
  ADD COLUMN lease_until TIMESTAMPTZ,
  ADD COLUMN next_attempt_at TIMESTAMPTZ;
CREATE INDEX idx_tasks_system_ref ON tasks (system_ref);
CREATE INDEX idx_tasks_assigned_worker ON tasks (assigned_worker);
CREATE INDEX idx_tasks_claimable ON tasks (revision)
  WHERE mode <> 'template' AND status_phase IN ('', 'pending', 'running');

CREATE TABLE task_logs (
  id BIGSERIAL PRIMARY KEY,
  task_name TEXT COLLATE "C" NOT NULL REFERENCES tasks (name) ON DELETE CASCADE,
  entry TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_task_logs_task ON task_logs (task_name, id);
