"""Data: tokenizers, dataset builders and the input pipeline.

`llmjax.data.build(config)` is the entry point for training; see `pipeline` for the batch format.
"""

from llmjax.data.pipeline import build
from llmjax.data.pipeline import ClassificationData

__all__ = ['build', 'ClassificationData']

