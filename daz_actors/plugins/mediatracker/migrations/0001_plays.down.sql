DROP TABLE daz_mediatracker_media;
DROP TABLE daz_mediatracker_plays;
