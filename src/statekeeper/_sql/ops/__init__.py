"""The operations, per feature: generators yielding statements, free of I/O."""
