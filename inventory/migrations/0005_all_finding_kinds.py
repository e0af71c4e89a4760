# The finding kinds of the access analysis and of the key lifecycle together (two branches added them apart).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0004_key_references_lifecycle'),
    ]

    operations = [
        migrations.AlterField(
            model_name='finding',
            name='kind',
            field=models.CharField(choices=[('policy-public', 'Policy Public'), ('policy-wildcard-actions', 'Policy Wildcard Actions'), ('policy-cross-account', 'Policy Cross Account'), ('grant-cross-account', 'Grant Cross Account'), ('rotation-disabled', 'Rotation Disabled'), ('pending-deletion-in-use', 'Pending Deletion In Use'), ('disabled-key-in-use', 'Disabled Key In Use'), ('unused-key', 'Unused Key'), ('encryption-context-violation', 'Encryption Context Violation'), ('trail-excludes-kms', 'Trail Excludes Kms'), ('new-principal', 'New Principal'), ('iam-decrypt-all-keys-managed', 'Iam Decrypt All Keys Managed'), ('iam-decrypt-all-keys-inline', 'Iam Decrypt All Keys Inline'), ('escalation-path', 'Escalation Path'), ('unused-access', 'Unused Access'), ('access-unexplained', 'Access Unexplained'), ('replica-policy-drift', 'Replica Policy Drift'), ('key-material-expiring', 'Key Material Expiring'), ('key-material-expired', 'Key Material Expired'), ('rotation-on-demand-budget', 'Rotation On Demand Budget'), ('key-churn', 'Key Churn')], max_length=48),
        ),
    ]
