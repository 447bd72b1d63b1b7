"""Training glue for train.py: task specifications (data, labels, collators, metrics) and the Trainer subclass."""
