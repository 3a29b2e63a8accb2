-- 0011: the migrations of plugins, each plugin a version sequence of its own.
--
-- `daz-actors migrate` applies the core migrations (daz_schema_migrations), then each
-- enabled plugin's (docs/plugins.md); `daz-actors migrate --plugin NAME --rollback N`
-- rolls one plugin back without touching the others.

CREATE TABLE daz_plugin_migrations (
    plugin      text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, version)
);
