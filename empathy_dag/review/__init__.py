"""Review stage: people in the loop. Items needing review go out as batches (JSONL, CSV, Label
Studio tasks), reviewers' decisions come back through the landing zone, are validated like every other
input, and flow into `reviewed_dialogues`, which the pairs stage trains from; agreement between
reviewers is measured where items have several."""
