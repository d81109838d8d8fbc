"""Sources: where mutations enter the dataflow."""
