DROP TABLE daz_greeter_users;
