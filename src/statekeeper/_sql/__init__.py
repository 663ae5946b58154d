"""Everything that talks to a SQL database."""
