from django.db import migrations


def sync(apps, schema_editor):
    from audit.roles import sync_roles

    sync_roles(apps)  # viewers and up may now see runs


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial"), ("audit", "0002_roles")]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
