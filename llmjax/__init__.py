"""llmjax: Transformer language models in JAX/Flax, trained from a config file on a device mesh."""
