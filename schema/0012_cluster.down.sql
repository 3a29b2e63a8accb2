DROP TRIGGER daz_leases_released ON daz_leases;
DROP FUNCTION daz_leases_notify();
DROP FUNCTION daz_lease_is_current(text, text, bigint);
DROP FUNCTION daz_lease_release(text, text, text[]);
DROP FUNCTION daz_lease_renew(text, interval, text[], text[]);
DROP FUNCTION daz_lease_claim(text, text, text, interval);
DROP TABLE daz_leases;
DROP SEQUENCE daz_lease_token_seq;
DROP TABLE daz_cluster_nodes;
