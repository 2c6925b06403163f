-- Task documents and watch events are rewritten on every agent step; lz4 compresses their
-- TOASTed payloads about twice as fast as the default pglz. A server built without lz4 (or
-- older than Postgres 14) keeps pglz. Existing rows keep their compression until rewritten.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE tasks ALTER COLUMN payload SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE store_events ALTER COLUMN payload SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 compression unavailable (%); payloads keep pglz', SQLERRM;
END
$$;
