"""Generate stage: the base model, batched LLM generation with a response cache, and the
SYNTHEMPATHY-style synthetic dialogue assets."""
