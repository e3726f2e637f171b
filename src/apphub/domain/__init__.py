"""Pure rules: definition models, the DAG, and every decision that needs no I/O."""
