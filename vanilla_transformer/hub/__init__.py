"""Taking a trained run to the Hub: its model card, and push."""
