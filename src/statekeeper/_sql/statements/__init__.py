"""The prebuilt SQLAlchemy Core statements, per feature."""
