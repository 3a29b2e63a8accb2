DROP TABLE daz_reminders;
