"""Export stage: the dataset and the adapters as folders people can use outside this pipeline."""
