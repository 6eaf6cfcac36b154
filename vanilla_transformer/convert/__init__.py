"""Converters from other implementations' checkpoints into VanillaTransformerForConditionalGeneration."""
