"""Full-text search over runs' output and results (runs/search.py): on SQLite an FTS5 table
without content, filled from the rows there are and kept in step by triggers; on PostgreSQL GIN
indexes on the texts' tsvectors. Nothing in the models' state changes.

On PostgreSQL the indexes are built in this migration's transaction: on a big table writes wait
for it (a few minutes at millions of chunks)."""

from django.db import migrations


def install(apps, schema_editor):
    from runs import search

    search.install(schema_editor.connection, fill=True)


def uninstall(apps, schema_editor):
    from runs import search

    search.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0013_outcomes_retention"),
    ]

    operations = [
        migrations.RunPython(install, uninstall, elidable=False),
    ]
