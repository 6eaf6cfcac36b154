"""Taking a trained model to the Hub: the model card, a portable model folder, and push."""
