from django.db import migrations


def sync(apps, schema_editor):
    from audit.roles import sync_roles

    sync_roles(apps)  # the admin role gets django-celery-beat's permissions (housekeeping rows)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0006_run_worker_identity"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
