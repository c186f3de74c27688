"""Every per-emotion asset is partitioned by the 28 GoEmotions labels, in taxonomy order, so that a
range over all of them (first..last) is one single-run backfill."""

from dagster import BackfillPolicy, StaticPartitionsDefinition

from empathy_dag.taxonomy import EMOTIONS

emotion_partitions = StaticPartitionsDefinition(EMOTIONS)

# One run over many emotions loads each model once and reads each source file once.
single_run = BackfillPolicy.single_run()
