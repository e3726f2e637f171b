"""apphub: jobs, DAG workflows and data assets, kept fresh by events."""

__version__ = "0.1.0"
