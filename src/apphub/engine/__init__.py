"""The orchestrator side: registering definitions, running DAGs, job runtimes, service calls."""
