"""Pure decision logic on typed records: no I/O, no Bytewax imports."""
