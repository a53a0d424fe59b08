"""Background jobs (train, scoring, batch inference): rows in the database, run by a Huey consumer."""
