"""empathy_dag: a Dagster pipeline from emotion-grounded situations to empathy-tuned models."""
