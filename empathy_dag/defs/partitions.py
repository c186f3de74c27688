"""Every per-emotion asset is partitioned by the 28 GoEmotions labels, in taxonomy order, so that a
range over all of them (first..last) is one single-run backfill."""

from dagster import BackfillPolicy, StaticPartitionsDefinition

from empathy_dag.taxonomy import EMOTIONS

emotion_partitions = StaticPartitionsDefinition(EMOTIONS)

# Dagster's documented tags of a run over a partition range (`RunRequest` has no public argument for one).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

# Run tags of one run over every emotion: jobs that mix per-emotion and unpartitioned assets (main,
# retraining, nightly evaluation) need them, or their per-emotion steps have no partition to work on.
ALL_EMOTIONS_TAGS = {
    PARTITION_RANGE_START_TAG: EMOTIONS[0],
    PARTITION_RANGE_END_TAG: EMOTIONS[-1],
}

# One run over many emotions loads each model once and reads each source file once.
single_run = BackfillPolicy.single_run()
