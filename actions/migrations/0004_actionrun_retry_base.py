from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0003_actionrun_failed_finished"),
    ]

    operations = [
        migrations.AddField(
            model_name="actionrun",
            name="retry_base",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
