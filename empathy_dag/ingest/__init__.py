"""Ingest stage: read situation/dialogue files of every supported format, validate each row,
quarantine what fails with the reason, and split the good rows per emotion."""
