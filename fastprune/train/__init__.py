"""Training-side tools: fine-tuning, evaluation and learned importance weights (`fastprune.train.gates`)."""
