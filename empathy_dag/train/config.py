"""Training hyperparameters as Dagster Config (editable in the launchpad), with CPU-sized defaults
for the demo: SmolLM2-135M, LoRA r=8 on every linear layer of the blocks, short sequences, one pass over
the demo data.

Why these defaults (measured in BENCHMARKS.md, "Training that learns"): a run of a few dozen steps
learns only if the adapter can move in that many steps. LoRA on q/v alone at 2e-4 decaying linearly to 0
from step 1 moved the held-out loss by a hair; LoRA on all seven projections with a short warmup, a higher
peak learning rate and a cosine decay lowers it clearly at the same cost per step (the adapter's own
compute is small next to the frozen model's forward and backward)."""

from dagster import Config
from pydantic import Field


class LoraTrainingConfig(Config):
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = Field(default=-1, description="> 0 overrides the epochs.")
    max_length: int = Field(default=128, description="Prompt + reply tokens; longer sequences are truncated.")
    warmup_ratio: float = Field(
        default=0.1,
        description="Share of the run's steps (rounded up to whole steps) "
        "of linear warmup to the peak learning rate.",
    )
    lr_scheduler_type: str = Field(
        default="cosine", description="transformers scheduler name after the warmup."
    )
    weight_decay: float = 0.0
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = Field(default=10, description="Trainer checkpoint every N steps (resume after a kill).")
    save_total_limit: int = 2
    device: str = Field(default="auto", description="auto = cuda when present, else mps, else cpu.")
    bf16: bool | None = Field(
        default=None, description="None = bf16 on a GPU that supports it, fp32 elsewhere."
    )
    load_in_4bit: bool = Field(
        default=False,
        description="QLoRA: the frozen base model in 4-bit NF4 "
        "(bitsandbytes), the LoRA adapter trained on top; needs a CUDA GPU.",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Off: a 135M model fits easily and recomputation costs ~30% time."
    )
    evals_per_run: int = Field(
        default=4,
        description="Evaluations on the validation split during the run "
        "(eval loss in the log and the loss curve); 0 = only before and after.",
    )
    max_eval_items: int = Field(
        default=256,
        description="Validation items (dialogues or pairs) evaluated, a "
        "stable sample when there are more; 0 = all.",
    )
    max_epochs: float = Field(
        default=20.0,
        description="Refuse a run whose max_steps would repeat the train "
        "split more often than this (too little data for the configured steps).",
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="Experiment tracking, off by default: "
        "['tensorboard'] or ['mlflow'] when that package is installed.",
    )
    logging_dir: str | None = Field(
        default=None,
        description="TensorBoard folder (default: beside the adapter, "
        "<name>_tensorboard/; $TENSORBOARD_LOGGING_DIR wins).",
    )


class SFTTrainingConfig(LoraTrainingConfig):
    """LoRA SFT on the train-split dialogues; the loss is on the listener's turn only (prompt-completion)."""

    learning_rate: float = 1e-3
    system_prompt: str | None = None


class DPOTrainingConfig(LoraTrainingConfig):
    """DPO from the SFT adapter, reference = the SFT policy (frozen; log-probs from `reference_logprobs`).

    EmPO explored beta in 0.025-0.05 and learning rates 1e-6 to 1e-5 (full fine-tuning); larger beta
    over-fitted. The default beta is the top of that range. LoRA updates a tiny fraction of the weights and
    usually needs a learning rate about ten times higher than full fine-tuning; the demo's few CPU steps need
    it higher still (5e-5 over the demo's 8 steps moved the DPO loss from 0.6931 to 0.6896 only), hence
    2e-4 with the shared warmup and cosine decay."""

    beta: float = 0.05
    learning_rate: float = 2e-4
    loss_type: str = "sigmoid"
    max_train_pairs: int = Field(
        default=0,
        description="> 0: train on a stable sample of at most this many "
        "train pairs (quick runs); must equal reference_logprobs' max_train_pairs. 0 = all.",
    )
