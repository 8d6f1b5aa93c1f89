"""Alembic environment: runs on the connection handed over by ``resultsdb.migrate``."""

from alembic import context

from resultsdb.migrate import VERSION_TABLE
from resultsdb.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
