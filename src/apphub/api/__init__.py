"""The HTTP shell: FastAPI routes that validate, record and answer; workers do the work."""
