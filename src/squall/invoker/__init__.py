"""The invoker: containers that pull activations, run them, and write the records."""
