"""Training glue for train.py: arguments (every ShapCAConfig field a flag), data and collator, metrics per task (read from the task registry, modeling_shapca/tasks.py) and the Trainer subclass."""
