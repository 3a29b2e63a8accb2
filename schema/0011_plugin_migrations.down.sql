-- Refuses while a plugin still has migrations applied: their tables would stay behind with
-- nothing recording them. Roll the plugins back first (daz-actors migrate --plugin NAME
-- --rollback 0).
DO $$
DECLARE
    remaining text;
BEGIN
    SELECT string_agg(DISTINCT plugin, ', ') INTO remaining FROM daz_plugin_migrations;
    IF remaining IS NOT NULL THEN
        RAISE EXCEPTION 'plugins still have migrations applied: % (roll them back first with daz-actors migrate --plugin NAME --rollback 0)', remaining;
    END IF;
END
$$;

DROP TABLE daz_plugin_migrations;
