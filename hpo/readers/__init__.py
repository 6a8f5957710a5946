"""Reading a stored study back: results, status, curves, tables, export, simulation."""
