"""Automation: sensors, schedules, jobs and the promotion gate."""
