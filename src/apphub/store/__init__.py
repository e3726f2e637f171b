"""Storage: SQLAlchemy Core tables, migrations and repositories. The only home of SQL dialects."""
