"""Jobs, sensors and schedules, collected by `empathy_dag.definitions`."""

JOBS: list = []
SENSORS: list = []
SCHEDULES: list = []
