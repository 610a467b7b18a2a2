"""llmjax: Transformer language models in JAX/Flax, trained from a config file on a device mesh."""

from llmjax import threefry as _threefry

# Dropout's random bits, the same as JAX's, without the rolled loop JAX lowers them to on CPU.
_threefry.register()
