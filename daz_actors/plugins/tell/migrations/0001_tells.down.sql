DROP TABLE daz_tells;
