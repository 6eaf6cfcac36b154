"""Everything that takes a trained model to the Hub: the model card."""
