"""Training on parallel data with the paper's recipe, on transformers' Seq2SeqTrainer."""
