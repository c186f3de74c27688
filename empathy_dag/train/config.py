"""Training hyperparameters as Dagster Config (editable in the launchpad), with CPU-sized defaults
for the demo: SmolLM2-135M, LoRA r=8 on q/v, short sequences, one pass over the demo data."""

from dagster import Config
from pydantic import Field


class LoraTrainingConfig(Config):
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = 1.0
    max_steps: int = Field(default=-1, description="> 0 overrides the epochs.")
    max_length: int = Field(default=128, description="Prompt + reply tokens; longer sequences are truncated.")
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = Field(default=10, description="Trainer checkpoint every N steps (resume after a kill).")
    save_total_limit: int = 2
    device: str = Field(default="auto", description="auto = cuda when present, else mps, else cpu.")
    bf16: bool | None = Field(default=None, description="None = bf16 on a GPU that supports it, fp32 elsewhere.")
    gradient_checkpointing: bool = Field(
        default=False, description="Off: a 135M model fits easily and recomputation costs ~30% time."
    )


class SFTTrainingConfig(LoraTrainingConfig):
    """LoRA SFT on the train-split dialogues; the loss is on the listener's turn only (prompt-completion)."""

    learning_rate: float = 2e-4
    system_prompt: str | None = None


class DPOTrainingConfig(LoraTrainingConfig):
    """DPO from the SFT adapter, reference = the SFT policy (frozen; log-probs from `reference_logprobs`).

    EmPO explored beta in 0.025-0.05 and learning rates 1e-6 to 1e-5 (full fine-tuning); larger beta
    over-fitted. The default beta is the top of that range. LoRA updates a tiny fraction of the weights and
    usually needs a learning rate about ten times higher than full fine-tuning, hence 5e-5 here."""

    beta: float = 0.05
    learning_rate: float = 5e-5
    loss_type: str = "sigmoid"
    max_train_pairs: int = Field(default=0, description="> 0: train on a stable sample of at most this many "
                                 "train pairs (quick runs); must equal reference_logprobs' max_train_pairs. 0 = all.")
